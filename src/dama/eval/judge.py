"""Text-only judges for judge-based benchmarks, behind one interface: `judge_id` and `complete(prompt) -> str`.

Three kinds, chosen by a spec string (`build_judge`):
- `openai:MODEL@BASE_URL` — any OpenAI-compatible chat-completions endpoint (the API, vLLM, llama.cpp, ... on
  loopback), over HTTP with the standard library. The key comes from an environment variable (default
  `OPENAI_API_KEY`) and is never logged, cached or written anywhere. `openai:MODEL` alone uses the OpenAI API.
- `hf:/path/to/causal-lm` — a local transformers causal LM, greedy, in-process (chat template if it has one).
- `fake` / `fake:SEED` — deterministic replies derived from the prompt's hash, for tests and dry runs.

Every judge built with a `cache_dir` answers repeated prompts from disk: one JSON file per (judge id, sha256 of the
prompt), written atomically, so re-scoring a run gives the same numbers and costs no new calls. Failed calls are
not cached; unparsable replies are (they are the judge's answer, and the scorer's re-ask is a different prompt).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from dama.devices import resolve_device, resolve_dtype
from dama.errors import DamaError
from dama.eval.records import write_json_atomic

DEFAULT_OPENAI_URL = "https://api.openai.com/v1"
# Answered with a retry: rate limits, timeouts and server-side failures. Other 4xx (bad key, bad model) are final.
RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class Judge(Protocol):
    """`complete(prompt)` sends the prompt as the user message; `role="system"` sends it as the only, system, message
    (RLAIF-V's Object HalBench extraction does so)."""

    judge_id: str

    def complete(self, prompt: str, role: str = "user") -> str: ...


ROLES = ("user", "system")


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise ValueError(f"unknown message role {role!r}; choose from {', '.join(ROLES)}")


class JudgeError(DamaError, RuntimeError):
    """A judge that cannot answer; the message names the endpoint (never the key) and the HTTP status."""


def prompt_sha256(prompt: str) -> str:
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:80] or "judge"


class FakeJudge:
    """Deterministic replies for tests: the same (seed, prompt) always gives the same reply.

    A reply follows the answer format the prompt asks for, recognised by the phrases the scorers' templates use:
    "rating: <k>" (MMHal, 0–6), "two scores" (LLaVA-Bench, two integers 1–10), "correctness score" (MM-Vet, one
    number in [0, 1]), "JSON list" (an empty list); anything else gets a short hash-derived text.
    """

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.judge_id = f"fake:{seed}"

    def complete(self, prompt: str, role: str = "user") -> str:
        _check_role(role)
        digest = hashlib.sha256(f"{self.seed}\n{prompt}".encode()).digest()
        lowered = prompt.lower()
        if "rating: <k>" in lowered:
            return f"The response is judged against the reference.\nRating: {digest[0] % 7}"
        if "two scores" in lowered:
            return f"{1 + digest[0] % 10} {1 + digest[1] % 10}\nBoth answers were compared."
        if "correctness score" in lowered:
            return f"{(digest[0] % 11) / 10:.1f}"
        if "json list" in lowered:
            return "[]"
        return f"fake reply {digest.hex()[:12]}"


class _MalformedReply(Exception):
    """A 200 reply that is not a chat completion (a proxy error page, a truncated body): retried."""


class OpenAIJudge:
    """A chat-completions endpoint, greedy (temperature 0), with retries and exponential backoff."""

    def __init__(
        self,
        model: str,
        base_url: str = DEFAULT_OPENAI_URL,
        api_key_env: str = "OPENAI_API_KEY",
        max_tokens: int = 1024,
        timeout: float = 60.0,
        retries: int = 5,
        backoff: float = 1.0,
    ):
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/chat/completions"
        self.api_key_env = api_key_env
        self.max_tokens = max_tokens
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.judge_id = f"openai:{model}@{self.base_url}"
        host = urllib.parse.urlparse(self.url).hostname or ""
        # Local servers usually take no key; a remote endpoint without one would only fail later with a 401.
        if not os.environ.get(api_key_env) and host not in {"127.0.0.1", "localhost", "::1"}:
            raise JudgeError(
                f"judge endpoint {self.url} needs an API key: set the environment variable {api_key_env} "
                "(or name another variable with --judge-key-env)"
            )

    def _scrub(self, text: str) -> str:
        key = os.environ.get(self.api_key_env)
        return text.replace(key, "***") if key else text

    def _request_once(self, body: bytes) -> str:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            payload = response.read().decode("utf-8", errors="replace")
        try:
            content = json.loads(payload)["choices"][0]["message"]["content"]
        except (json.JSONDecodeError, KeyError, IndexError, TypeError) as err:
            raise _MalformedReply(
                f"reply is not a chat completion ({err.__class__.__name__}): {payload[:200]!r}"
            ) from err
        if not isinstance(content, str):
            raise _MalformedReply(f"reply content is {type(content).__name__}, not text")
        return content

    def complete(self, prompt: str, role: str = "user") -> str:
        _check_role(role)
        body = json.dumps(
            {
                "model": self.model,
                "messages": [{"role": role, "content": prompt}],
                "temperature": 0,
                "max_tokens": self.max_tokens,
            }
        ).encode("utf-8")
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                return self._request_once(body)
            except urllib.error.HTTPError as err:
                detail = err.read().decode("utf-8", errors="replace")[:200] if err.fp else ""
                last = f"HTTP {err.code} {err.reason}: {detail}"
                if err.code not in RETRYABLE_STATUS:
                    break
            except (urllib.error.URLError, TimeoutError, ConnectionError, _MalformedReply) as err:
                last = str(getattr(err, "reason", err))
        raise JudgeError(self._scrub(f"judge request to {self.url} failed after {attempt + 1} attempt(s): {last}"))


class HFJudge:
    """A local transformers causal LM as judge: chat template when the tokenizer has one, greedy decoding."""

    def __init__(self, path: str, max_new_tokens: int = 512, device: str = "auto"):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if not Path(path).exists():
            raise JudgeError(f"judge model folder not found: {path}")
        self.device = resolve_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        dtype = resolve_dtype("auto", self.device)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
        self.max_new_tokens = max_new_tokens
        self.judge_id = f"hf:{Path(path).resolve()}"

    def complete(self, prompt: str, role: str = "user") -> str:
        import torch

        _check_role(role)
        if self.tokenizer.chat_template:
            try:
                text = self.tokenizer.apply_chat_template(
                    [{"role": role, "content": prompt}], tokenize=False, add_generation_prompt=True
                )
            # jinja templates raise their own error types, e.g. "conversation roles must alternate user/assistant"
            except Exception as err:
                raise JudgeError(
                    f"{self.judge_id}: its chat template cannot render a lone {role} message ({err}); "
                    "for Object HalBench use --prompt dama-v1, which is sent as a user message"
                ) from err
        else:
            text = prompt
        inputs = self.tokenizer(text, return_tensors="pt", add_special_tokens=not self.tokenizer.chat_template)
        inputs = inputs.to(self.device)
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            pad_id = self.tokenizer.eos_token_id
        with torch.no_grad():
            out = self.model.generate(
                **inputs, do_sample=False, num_beams=1, max_new_tokens=self.max_new_tokens, pad_token_id=pad_id
            )
        # out: (1, prompt_len + new_len); keep the continuation only
        return self.tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()


@dataclass
class CachedJudge:
    """Wraps a judge with an on-disk cache: `<cache_dir>/<judge slug>-<id hash>/<prompt sha256>.json`."""

    inner: Judge
    cache_dir: Path
    hits: int = 0
    calls: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)  # scorers may ask from threads

    @property
    def judge_id(self) -> str:
        return self.inner.judge_id

    @property
    def folder(self) -> Path:
        id_hash = hashlib.sha256(self.judge_id.encode("utf-8")).hexdigest()[:12]
        return Path(self.cache_dir) / f"{_slug(self.judge_id)}-{id_hash}"

    def complete(self, prompt: str, role: str = "user") -> str:
        _check_role(role)
        # user prompts keep their plain digest (existing caches stay valid); other roles are part of the key
        digest = prompt_sha256(prompt if role == "user" else f"[{role}]\n{prompt}")
        path = self.folder / f"{digest}.json"
        if path.is_file():
            try:
                entry = json.loads(path.read_text(encoding="utf-8"))
                if entry.get("judge_id") == self.judge_id and isinstance(entry.get("reply"), str):
                    with self._lock:
                        self.hits += 1
                    return entry["reply"]
            except json.JSONDecodeError:
                print(f"judge cache: ignoring unreadable entry {path}", file=sys.stderr)
        reply = self.inner.complete(prompt) if role == "user" else self.inner.complete(prompt, role=role)
        with self._lock:
            self.calls += 1
        entry = {"judge_id": self.judge_id, "prompt_sha256": digest, "role": role, "prompt": prompt, "reply": reply}
        write_json_atomic(path, entry)
        return reply


def build_judge(
    spec: str,
    cache_dir: str | Path | None = None,
    *,
    api_key_env: str = "OPENAI_API_KEY",
    retries: int = 5,
    backoff: float = 1.0,
    timeout: float = 60.0,
    max_tokens: int = 1024,
    device: str = "auto",
) -> Judge:
    """Build a judge from `openai:MODEL[@BASE_URL]`, `hf:PATH` or `fake[:SEED]`; cached on disk if `cache_dir`."""
    kind, _, rest = spec.partition(":")
    if kind == "fake":
        if rest and not rest.lstrip("-").isdigit():
            raise JudgeError(f"judge spec {spec!r}: the fake judge takes an integer seed, e.g. 'fake:1'")
        judge: Judge = FakeJudge(int(rest) if rest else 0)
    elif kind == "openai":
        model, _, base_url = rest.partition("@")
        if not model:
            raise JudgeError(f"judge spec {spec!r}: expected 'openai:MODEL' or 'openai:MODEL@BASE_URL'")
        judge = OpenAIJudge(
            model,
            base_url or DEFAULT_OPENAI_URL,
            api_key_env=api_key_env,
            max_tokens=max_tokens,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
        )
    elif kind == "hf":
        if not rest:
            raise JudgeError(f"judge spec {spec!r}: expected 'hf:/path/to/local/model'")
        judge = HFJudge(rest, max_new_tokens=max_tokens, device=device)
    else:
        raise JudgeError(
            f"unknown judge spec {spec!r}: use 'openai:MODEL[@BASE_URL]', 'hf:/path/to/model' or 'fake[:SEED]'"
        )
    return CachedJudge(judge, Path(cache_dir)) if cache_dir is not None else judge
