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

The endpoint client, the local model and the cache are `dama.llm`'s, shared with the LLM sentence splitter of
`dama hardness`; a judge that cannot answer raises `dama.llm.LLMError`.
"""

from __future__ import annotations

import hashlib
import os
import threading
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from dama.llm import (
    DEFAULT_OPENAI_URL,
    ChatEndpoint,
    FileReplyCache,
    LLMSetupError,
    LocalLM,
    check_role,
    load_causal_lm,
)

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class Judge(Protocol):
    """`complete(prompt)` sends the prompt as the user message; `role="system"` sends it as the only, system, message
    (RLAIF-V's Object HalBench extraction does so)."""

    judge_id: str

    def complete(self, prompt: str, role: str = "user") -> str: ...


class FakeJudge:
    """Deterministic replies for tests: the same (seed, prompt) always gives the same reply.

    A reply follows the answer format the prompt asks for, recognised by the phrases the scorers' templates use:
    "rating: <k>" (MMHal, 0–6), "two scores" (LLaVA-Bench, two integers 1–10), "correctness score" (MM-Vet, one
    number in [0, 1]), "JSON list" (an empty list in a ```json block); anything else gets a short hash-derived text.
    """

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.judge_id = f"fake:{seed}"

    def complete(self, prompt: str, role: str = "user") -> str:
        check_role(role)
        digest = hashlib.sha256(f"{self.seed}\n{prompt}".encode()).digest()
        lowered = prompt.lower()
        if "rating: <k>" in lowered:
            return f"The response is judged against the reference.\nRating: {digest[0] % 7}"
        if "two scores" in lowered:
            return f"{1 + digest[0] % 10} {1 + digest[1] % 10}\nBoth answers were compared."
        if "correctness score" in lowered:
            return f"{(digest[0] % 11) / 10:.1f}"
        if "json list" in lowered:
            return "```json\n[]\n```"  # an empty list that RLAIF-V's reader and the first-list reader both read
        return f"fake reply {digest.hex()[:12]}"


class OpenAIJudge(ChatEndpoint):
    """A chat-completions endpoint (`dama.llm.ChatEndpoint`) as judge; a remote one needs its key up front."""

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
        super().__init__(
            base_url, model, api_key_env=api_key_env, max_tokens=max_tokens, timeout=timeout, retries=retries,
            concurrency=1, backoff=backoff,
        )  # fmt: skip
        self.judge_id = f"openai:{model}@{self.base_url}"
        # Local servers usually take no key; a remote endpoint without one would only fail later with a 401.
        if not os.environ.get(api_key_env) and (urllib.parse.urlparse(self.url).hostname or "") not in LOOPBACK_HOSTS:
            raise LLMSetupError(
                f"judge endpoint {self.url} needs an API key: set the environment variable {api_key_env} "
                "(or name another variable with --judge-key-env)"
            )


class HFJudge(LocalLM):
    """A local transformers causal LM (`dama.llm.LocalLM`) as judge: chat template when it has one, greedy."""

    role_hint = "; for Object HalBench use --prompt dama-v1, which is sent as a user message"

    def __init__(self, path: str, max_new_tokens: int = 512, device: str = "auto"):
        if not Path(path).exists():
            raise LLMSetupError(f"judge model folder not found: {path}")
        model, tokenizer = load_causal_lm(path, device, "auto", what="judge model")
        super().__init__(model, tokenizer, max_new_tokens=max_new_tokens, name=path)
        self.device = model.device
        self.judge_id = f"hf:{Path(path).resolve()}"


@dataclass
class CachedJudge:
    """Wraps a judge with the on-disk reply cache (`dama.llm.FileReplyCache`):
    `<cache_dir>/<judge slug>-<id hash>/<prompt sha256>.json`."""

    inner: Judge
    cache_dir: Path
    hits: int = 0
    calls: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)  # scorers may ask from threads

    def __post_init__(self) -> None:
        self._cache = FileReplyCache(self.cache_dir)

    @property
    def judge_id(self) -> str:
        return self.inner.judge_id

    @property
    def folder(self) -> Path:
        return self._cache.folder(self.judge_id)

    def complete(self, prompt: str, role: str = "user") -> str:
        check_role(role)
        cached = self._cache.get(self.judge_id, prompt, role)
        if cached is not None:
            with self._lock:
                self.hits += 1
            return cached
        reply = self.inner.complete(prompt) if role == "user" else self.inner.complete(prompt, role=role)
        with self._lock:
            self.calls += 1
        self._cache.put(self.judge_id, prompt, reply, role)
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
            raise LLMSetupError(f"judge spec {spec!r}: the fake judge takes an integer seed, e.g. 'fake:1'")
        judge: Judge = FakeJudge(int(rest) if rest else 0)
    elif kind == "openai":
        model, _, base_url = rest.partition("@")
        if not model:
            raise LLMSetupError(f"judge spec {spec!r}: expected 'openai:MODEL' or 'openai:MODEL@BASE_URL'")
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
            raise LLMSetupError(f"judge spec {spec!r}: expected 'hf:/path/to/local/model'")
        judge = HFJudge(rest, max_new_tokens=max_tokens, device=device)
    else:
        raise LLMSetupError(
            f"unknown judge spec {spec!r}: use 'openai:MODEL[@BASE_URL]', 'hf:/path/to/model' or 'fake[:SEED]'"
        )
    return CachedJudge(judge, Path(cache_dir)) if cache_dir is not None else judge
