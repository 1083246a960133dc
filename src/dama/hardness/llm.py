"""Text generators for the LLM splitter, and the on-disk cache of every call.

- `LocalGenerator`: a transformers causal LM (a path or an already-built model + tokenizer), batched greedy
  generation with left padding, the tokenizer's chat template when it has one.
- `OpenAIGenerator`: an OpenAI-compatible `/chat/completions` endpoint (OpenAI, vLLM, llama.cpp server, ...), over
  the standard library's HTTP client; the key is read from an environment variable, never from the command line.
- `GenerationCache`: SQLite, keyed by (generator, prompt); each batch is committed, so a kill loses at most one.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from dama.errors import DamaError


class GenerationError(DamaError, RuntimeError):
    """A generator (local model or endpoint) failed; the message names it and says why."""


class Generator(Protocol):
    cache_key: str  # identifies the model and decoding settings: a different key never reuses cached answers

    def generate(self, prompts: Sequence[str]) -> list[str]: ...


class GenerationCache:
    """Generated answers on disk: `(generator key, prompt) -> answer`, in one SQLite file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path))
        self._db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, answer TEXT NOT NULL)")
        self._db.commit()

    @staticmethod
    def _key(generator_key: str, prompt: str) -> str:
        return hashlib.sha256(json.dumps([generator_key, prompt]).encode("utf-8")).hexdigest()

    def get_many(self, generator_key: str, prompts: Sequence[str]) -> dict[str, str]:
        out = {}
        for prompt in dict.fromkeys(prompts):
            row = self._db.execute("SELECT answer FROM answers WHERE key = ?", (self._key(generator_key, prompt),))
            hit = row.fetchone()
            if hit is not None:
                out[prompt] = hit[0]
        return out

    def put_many(self, generator_key: str, answers: dict[str, str]) -> None:
        rows = [(self._key(generator_key, p), a) for p, a in answers.items()]
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO answers (key, answer) VALUES (?, ?)", rows)

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0])

    def close(self) -> None:
        self._db.close()


class LocalGenerator:
    """Batched greedy generation with a local transformers causal LM."""

    def __init__(self, model, tokenizer, max_new_tokens: int = 256, name: str | None = None) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        name = name or getattr(model.config, "_name_or_path", "") or type(model).__name__
        self.cache_key = f"local:{name}:greedy:max_new_tokens={max_new_tokens}"

    @classmethod
    def from_pretrained(
        cls, name_or_path: str, device: str = "auto", dtype: str = "auto", max_new_tokens: int = 256
    ) -> LocalGenerator:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from dama.devices import resolve_device, resolve_dtype

        dev = resolve_device(device)
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=resolve_dtype(dtype, dev)).to(dev)
        return cls(model, tokenizer, max_new_tokens=max_new_tokens, name=name_or_path)

    def _format(self, prompt: str) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
            )
        return prompt

    def generate(self, prompts: Sequence[str]) -> list[str]:
        import torch

        self.tokenizer.padding_side = "left"  # generation continues from the right end of every row
        batch = self.tokenizer(
            [self._format(p) for p in prompts], return_tensors="pt", padding=True, add_special_tokens=False
        ).to(self.model.device)
        with torch.inference_mode():
            out = self.model.generate(
                **batch,
                do_sample=False,
                max_new_tokens=self.max_new_tokens,
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self.tokenizer.eos_token_id,
            )
        new_tokens = out[:, batch["input_ids"].shape[1] :]  # (B, <= max_new_tokens)
        return self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)


class OpenAIGenerator:
    """Chat completions from an OpenAI-compatible endpoint, `concurrency` requests in flight, retries on 429/5xx."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        max_tokens: int = 512,
        timeout: float = 120.0,
        retries: int = 3,
        concurrency: int = 4,
    ) -> None:
        url = base_url.rstrip("/")
        self.url = url if url.endswith("/chat/completions") else f"{url}/chat/completions"
        self.model = model
        self.api_key_env = api_key_env
        self.max_tokens = max_tokens
        self.timeout = timeout
        self.retries = retries
        self.concurrency = max(1, concurrency)
        self.cache_key = f"openai:{self.url}:{model}:temperature=0:max_tokens={max_tokens}"

    def _request(self, prompt: str) -> str:
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": 0,
            "max_tokens": self.max_tokens,
        }
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env, "") if self.api_key_env else ""
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")
        for attempt in range(self.retries + 1):
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    payload = json.loads(response.read().decode("utf-8"))
                break
            except urllib.error.HTTPError as err:
                detail = err.read().decode("utf-8", "replace")[:500]
                if err.code in (429, 500, 502, 503, 504) and attempt < self.retries:
                    time.sleep(min(2.0**attempt, 30.0))
                    continue
                hint = f" (is ${self.api_key_env} set?)" if err.code in (401, 403) else ""
                raise GenerationError(f"{self.url} answered HTTP {err.code}{hint}: {detail}") from err
            except (urllib.error.URLError, TimeoutError, OSError) as err:
                if attempt < self.retries:
                    time.sleep(min(2.0**attempt, 30.0))
                    continue
                raise GenerationError(f"cannot reach {self.url}: {err}") from err
            except json.JSONDecodeError as err:
                raise GenerationError(f"{self.url} answered something that is not JSON: {err}") from err
        try:
            return str(payload["choices"][0]["message"]["content"] or "")
        except (KeyError, IndexError, TypeError) as err:
            raise GenerationError(f"{self.url} answered without choices[0].message.content: {str(payload)[:300]}") from err

    def generate(self, prompts: Sequence[str]) -> list[str]:
        if self.concurrency == 1 or len(prompts) == 1:
            return [self._request(p) for p in prompts]
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(self._request, prompts))
