"""Text LLMs for dama: one client per kind of model and one on-disk cache of their replies.

The LLM sentence splitter of `dama hardness` (`dama.hardness.splitters.LLMSplitter`) and the judges of `dama eval`
(`dama.eval.judge`) both use this module:

- `ChatEndpoint`: an OpenAI-compatible `/chat/completions` endpoint (OpenAI, vLLM, llama.cpp server, ...) over the
  standard library's HTTP client; greedy (temperature 0); retries with exponential backoff on timeouts, network
  errors, 408/409/425/429/5xx and replies that are not a chat completion. The key is read from an environment
  variable, sent only in the `Authorization` header and removed from every error message.
- `LocalLM`: a local transformers causal LM, greedy, batched with left padding, the tokenizer's chat template when
  it has one (one message of the given role).
- `ReplyCache`: replies by (model key, role, prompt) on disk, as one SQLite file (`SqliteReplyCache`, the
  splitter's, committed per batch) or as one JSON file per reply (`FileReplyCache`, the judges', readable and
  written atomically). A different model key never reuses a reply.

Both clients answer `complete(prompt, role)` (one reply) and `generate(prompts)` (user prompts, in order), and name
their model and decoding settings in `cache_key`. A model that cannot answer raises `LLMError` (exit code 4: an
endpoint down or timing out, rerun later); settings that cannot work raise its subclass `LLMSetupError` (exit code 2:
a spec that does not parse, a key that is not set or is refused, a model folder that is not there).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import sqlite3
import sys
import threading
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from dama.errors import EXIT_UNAVAILABLE, EXIT_USER_ERROR, DamaError, loading_model
from dama.io import atomic_write_text, json_text

DEFAULT_OPENAI_URL = "https://api.openai.com/v1"
# Answered with a retry: rate limits, timeouts and server-side failures. Other 4xx (bad key, bad model) are final.
RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
MAX_BACKOFF_S = 30.0
ROLES = ("user", "system")


class LLMError(DamaError, RuntimeError):
    """A model that cannot answer now (an endpoint down, timing out, failing with 5xx or replies that never parse);
    the message names the endpoint or model (never a key) and says why. Exit code 4 (`EXIT_UNAVAILABLE`): nothing
    in the input is wrong, and the replies received so far are cached, so a later rerun continues."""

    exit_code = EXIT_UNAVAILABLE


class LLMSetupError(LLMError):
    """LLM settings that cannot work, the user's to fix: a judge spec that does not parse, an API key that is not
    set or that the endpoint refuses (a 4xx other than a rate limit), a model folder that is not there, a chat
    template that cannot render the prompt's role. Exit code 2, like any other bad flag."""

    exit_code = EXIT_USER_ERROR


def check_role(role: str) -> None:
    if role not in ROLES:
        raise ValueError(f"unknown message role {role!r}; choose from {', '.join(ROLES)}")


class _MalformedReply(Exception):
    """A 200 reply that is not a chat completion (a proxy error page, a truncated body): retried."""


class ChatEndpoint:
    """Chat completions from an OpenAI-compatible endpoint; `concurrency` requests in flight in `generate`."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        max_tokens: int = 512,
        timeout: float = 120.0,
        retries: int = 3,
        concurrency: int = 4,
        backoff: float = 1.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.url = (
            self.base_url if self.base_url.endswith("/chat/completions") else f"{self.base_url}/chat/completions"
        )
        self.model = model
        self.api_key_env = api_key_env
        self.max_tokens = max_tokens
        self.timeout = timeout
        self.retries = retries
        self.concurrency = max(1, concurrency)
        self.backoff = backoff
        self.cache_key = f"openai:{self.url}:{model}:temperature=0:max_tokens={max_tokens}"

    def _key(self) -> str:
        return os.environ.get(self.api_key_env, "") if self.api_key_env else ""

    def _scrub(self, text: str) -> str:
        key = self._key()
        return text.replace(key, "***") if key else text

    def _request_once(self, body: bytes) -> str:
        headers = {"Content-Type": "application/json"}
        if self._key():
            headers["Authorization"] = f"Bearer {self._key()}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            payload = response.read().decode("utf-8", errors="replace")
        try:
            content = json.loads(payload)["choices"][0]["message"]["content"]
        except (json.JSONDecodeError, KeyError, IndexError, TypeError) as err:
            raise _MalformedReply(
                f"reply is not a chat completion (no choices[0].message.content, {err.__class__.__name__}): "
                f"{payload[:200]!r}"
            ) from err
        if content is None:
            return ""
        if not isinstance(content, str):
            raise _MalformedReply(f"reply is not a chat completion: its content is {type(content).__name__}, not text")
        return content

    def complete(self, prompt: str, role: str = "user") -> str:
        """The reply to `prompt`, sent as the only message, of `role`; `LLMError` once the retries are spent."""
        check_role(role)
        body = json.dumps(
            {
                "model": self.model,
                "messages": [{"role": role, "content": prompt}],
                "temperature": 0,
                "max_tokens": self.max_tokens,
            }
        ).encode("utf-8")
        last, refused = "", False
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(self.backoff * 2 ** (attempt - 1), MAX_BACKOFF_S))
            try:
                return self._request_once(body)
            except urllib.error.HTTPError as err:
                detail = err.read().decode("utf-8", errors="replace")[:300] if err.fp else ""
                hint = f" (is ${self.api_key_env} set?)" if err.code in (401, 403) and self.api_key_env else ""
                last = f"HTTP {err.code} {err.reason}{hint}: {detail}"
                if err.code not in RETRYABLE_STATUS:
                    refused = True  # a bad key, model name or URL: retrying cannot help
                    break
            except TimeoutError:
                last = f"no reply within {self.timeout:g} s (timed out)"
            except urllib.error.URLError as err:
                last = f"cannot reach the endpoint ({err.reason})"
            except (OSError, http.client.HTTPException, _MalformedReply) as err:
                last = str(err) or type(err).__name__
        kind = LLMSetupError if refused else LLMError
        raise kind(self._scrub(f"request to {self.url} failed after {attempt + 1} attempt(s): {last}"))

    def generate(self, prompts: Sequence[str]) -> list[str]:
        """Replies to user prompts, in order."""
        if self.concurrency == 1 or len(prompts) <= 1:
            return [self.complete(p) for p in prompts]
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(self.complete, prompts))


def load_causal_lm(
    name_or_path: str, device: str = "auto", dtype: str = "auto", what: str = "model"
) -> tuple[Any, Any]:
    """(model, tokenizer) of a transformers causal LM, on `device` in `dtype` (`dama.devices` resolves `auto`);
    `ModelNotFoundError` naming `what` (the flag, e.g. `"--llm-model"`) when it cannot be loaded."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dama.devices import resolve_device, resolve_dtype

    dev = resolve_device(device)
    with loading_model(name_or_path, what):  # not found: one line saying how to point at a folder
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=resolve_dtype(dtype, dev)).to(dev)
    return model, tokenizer


class LocalLM:
    """Greedy generation with a local transformers causal LM: batched, left-padded (batching changes no reply)."""

    role_hint = ""  # appended to the error when the chat template cannot render a message of the asked role

    def __init__(self, model: Any, tokenizer: Any, max_new_tokens: int = 256, name: str | None = None) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.name = name or getattr(model.config, "_name_or_path", "") or type(model).__name__
        self.cache_key = f"local:{self.name}:greedy:max_new_tokens={max_new_tokens}"

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        device: str = "auto",
        dtype: str = "auto",
        max_new_tokens: int = 256,
        what: str = "model",
    ) -> LocalLM:
        model, tokenizer = load_causal_lm(name_or_path, device, dtype, what)
        return cls(model, tokenizer, max_new_tokens=max_new_tokens, name=name_or_path)

    def _format(self, prompt: str, role: str) -> str:
        if not getattr(self.tokenizer, "chat_template", None):
            return prompt
        try:
            return self.tokenizer.apply_chat_template(
                [{"role": role, "content": prompt}], add_generation_prompt=True, tokenize=False
            )
        # jinja templates raise their own error types, e.g. "conversation roles must alternate user/assistant"
        except Exception as err:
            raise LLMSetupError(
                f"{self.name}: its chat template cannot render a lone {role} message ({err}){self.role_hint}"
            ) from err

    def complete_many(self, prompts: Sequence[str], role: str = "user") -> list[str]:
        """Replies to `prompts` (each the only message, of `role`), in order, stripped of surrounding whitespace."""
        import torch

        check_role(role)
        templated = bool(getattr(self.tokenizer, "chat_template", None))
        self.tokenizer.padding_side = "left"  # generation continues from the right end of every row
        batch = self.tokenizer(
            [self._format(p, role) for p in prompts],
            return_tensors="pt",
            padding=True,
            add_special_tokens=not templated,  # a chat template writes the special tokens itself
        ).to(self.model.device)
        extra = {}
        if getattr(getattr(self.model, "generation_config", None), "eos_token_id", None) is None:
            extra["eos_token_id"] = self.tokenizer.eos_token_id
        with torch.inference_mode():
            out = self.model.generate(
                **batch,
                do_sample=False,
                num_beams=1,
                max_new_tokens=self.max_new_tokens,
                pad_token_id=self.tokenizer.pad_token_id,
                **extra,
            )
        new_tokens = out[:, batch["input_ids"].shape[1] :]  # (B, <= max_new_tokens): the continuations only
        return [text.strip() for text in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]

    def complete(self, prompt: str, role: str = "user") -> str:
        return self.complete_many([prompt], role)[0]

    def generate(self, prompts: Sequence[str]) -> list[str]:
        return self.complete_many(prompts)


# --- the cache -------------------------------------------------------------------------------------------------------


class ReplyCache(ABC):
    """Replies on disk by (model key, role, prompt). Subclasses store them; `get_many`/`put_many` work in batches."""

    @abstractmethod
    def get_many(self, model_key: str, prompts: Sequence[str], role: str = "user") -> dict[str, str]:
        """The cached replies among `prompts` (prompt -> reply); prompts not cached are absent."""

    @abstractmethod
    def put_many(self, model_key: str, replies: Mapping[str, str], role: str = "user") -> None:
        """Store `replies` (prompt -> reply)."""

    def get(self, model_key: str, prompt: str, role: str = "user") -> str | None:
        return self.get_many(model_key, [prompt], role).get(prompt)

    def put(self, model_key: str, prompt: str, reply: str, role: str = "user") -> None:
        self.put_many(model_key, {prompt: reply}, role)


class SqliteReplyCache(ReplyCache):
    """One SQLite file; each `put_many` is one transaction, so a kill loses at most the batch being written."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False)
        self._db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, answer TEXT NOT NULL)")
        self._db.commit()

    @staticmethod
    def _key(model_key: str, prompt: str, role: str) -> str:
        # user prompts keep the key of the first version of this cache (existing files stay valid)
        fields = [model_key, prompt] if role == "user" else [model_key, prompt, role]
        return hashlib.sha256(json.dumps(fields).encode("utf-8")).hexdigest()

    def get_many(self, model_key: str, prompts: Sequence[str], role: str = "user") -> dict[str, str]:
        out = {}
        with self._lock:
            for prompt in dict.fromkeys(prompts):
                row = self._db.execute(
                    "SELECT answer FROM answers WHERE key = ?", (self._key(model_key, prompt, role),)
                )
                hit = row.fetchone()
                if hit is not None:
                    out[prompt] = hit[0]
        return out

    def put_many(self, model_key: str, replies: Mapping[str, str], role: str = "user") -> None:
        rows = [(self._key(model_key, p, role), a) for p, a in replies.items()]
        with self._lock, self._db:
            self._db.executemany("INSERT OR REPLACE INTO answers (key, answer) VALUES (?, ?)", rows)

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0])

    def close(self) -> None:
        self._db.close()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:80] or "judge"


def prompt_sha256(prompt: str) -> str:
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()


class FileReplyCache(ReplyCache):
    """One JSON file per reply: `<folder>/<model slug>-<key hash>/<prompt sha256>.json`, written atomically, holding
    the model key, role, prompt and reply (a run's judge calls can be read, and copied with its results)."""

    def __init__(self, folder: str | Path) -> None:
        self.root = Path(folder)

    def folder(self, model_key: str) -> Path:
        key_hash = hashlib.sha256(model_key.encode("utf-8")).hexdigest()[:12]
        return self.root / f"{_slug(model_key)}-{key_hash}"

    @staticmethod
    def digest(prompt: str, role: str) -> str:
        # user prompts keep their plain digest (existing caches stay valid); other roles are part of the key
        return prompt_sha256(prompt if role == "user" else f"[{role}]\n{prompt}")

    def get_many(self, model_key: str, prompts: Sequence[str], role: str = "user") -> dict[str, str]:
        out = {}
        for prompt in dict.fromkeys(prompts):
            path = self.folder(model_key) / f"{self.digest(prompt, role)}.json"
            if not path.is_file():
                continue
            try:
                entry = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                print(f"reply cache: ignoring unreadable entry {path}", file=sys.stderr)
                continue
            if isinstance(entry, dict) and entry.get("judge_id") == model_key and isinstance(entry.get("reply"), str):
                out[prompt] = entry["reply"]
        return out

    def put_many(self, model_key: str, replies: Mapping[str, str], role: str = "user") -> None:
        for prompt, reply in replies.items():
            digest = self.digest(prompt, role)
            # "judge_id": the field name of the first version of this cache (existing entries stay valid)
            entry = {"judge_id": model_key, "prompt_sha256": digest, "role": role, "prompt": prompt, "reply": reply}
            atomic_write_text(self.folder(model_key) / f"{digest}.json", json_text(entry))
