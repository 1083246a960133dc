"""Judges: the fake, the on-disk cache, an OpenAI-compatible endpoint (fake server on loopback), a local causal LM."""

from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from dama.eval import judged, judged_rubrics
from dama.eval.judge import CachedJudge, FakeJudge, build_judge
from dama.llm import LLMError

KEY = "sk-test-SECRET-4242"
MAX_REQUESTS = 40  # the fake server refuses beyond this, so a retry bug cannot loop for long


class FakeOpenAI:
    """A chat-completions server on 127.0.0.1 (ephemeral port). `script` is a list of (status, body) used in order
    (status "sleep": wait `body` seconds, then answer normally); when it runs out, `reply(prompt)` answers with a
    normal completion. Requests are counted and recorded."""

    def __init__(self, reply=lambda prompt: "ok"):
        self.script: list[tuple[int, str]] = []
        self.reply = reply
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                if len(server.requests) > MAX_REQUESTS:
                    status, text = 418, "too many requests in one test"
                else:
                    status, text = server.script.pop(0) if server.script else (200, None)
                    if status == "sleep":
                        time.sleep(float(text))
                        status, text = 200, None
                if text is None:
                    content = server.reply(body["messages"][0]["content"])
                    text = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]})
                data = text.encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_port}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)  # a CI proxy must not intercept loopback requests
    srv = FakeOpenAI()
    yield srv
    srv.close()


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    return KEY


def _openai(server, **kwargs):
    return build_judge(
        f"openai:judge-model@{server.base_url}", retries=kwargs.pop("retries", 3), backoff=0.01, **kwargs
    )


def test_fake_judge_is_deterministic_and_answers_in_the_asked_format():
    prompt = judged.build_prompt(
        "mmhal", {"question": "q", "reference": "r", "image_content": "cat"}, "The cat is black."
    )
    a, b, other = FakeJudge(0).complete(prompt), FakeJudge(0).complete(prompt), FakeJudge(1).complete(prompt)
    assert a == b
    assert isinstance(judged_rubrics.parse_mmhal(a), int)
    assert FakeJudge(0).judge_id == "fake:0" and build_judge("fake").judge_id == "fake:0"
    assert build_judge("fake:1").complete(prompt) == other
    mmvet = judged.build_prompt("mmvet", {"question": "q", "reference": "r"}, "answer")
    assert 0 <= judged_rubrics.parse_mmvet(FakeJudge(3).complete(mmvet)) <= 1


@pytest.mark.parametrize("spec", ["gpt4", "fake:abc", "openai:", "hf:"])
def test_bad_specs_are_refused_by_name(spec):
    with pytest.raises(LLMError, match="judge spec"):
        build_judge(spec)


def test_remote_endpoint_without_key_names_the_variable(monkeypatch):
    monkeypatch.delenv("MY_JUDGE_KEY", raising=False)
    with pytest.raises(LLMError, match="MY_JUDGE_KEY"):
        build_judge("openai:gpt-4o-mini@https://api.example.com/v1", api_key_env="MY_JUDGE_KEY")


class Counting:
    judge_id = "counting"

    def __init__(self):
        self.calls = 0

    def complete(self, prompt):
        self.calls += 1
        return f"reply {self.calls} to {prompt}"


def test_cache_answers_repeated_prompts_from_disk(tmp_path):
    inner = Counting()
    first = CachedJudge(inner, tmp_path)
    assert first.complete("a") == "reply 1 to a"
    assert first.complete("b") == "reply 2 to b"
    again = CachedJudge(inner, tmp_path)  # a new process would build a new wrapper over the same folder
    assert again.complete("a") == "reply 1 to a"
    assert inner.calls == 2 and again.hits == 1 and again.calls == 0
    files = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert len(files) == 2 and all(name.endswith(".json") and not name.startswith(".") for name in files)


def test_openai_judge_success_sends_greedy_request_with_key_header(server, api_key):
    server.reply = lambda prompt: f"echo: {prompt}"
    judge = _openai(server)
    assert judge.complete("hello") == "echo: hello"
    (request,) = server.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["auth"] == f"Bearer {KEY}"
    assert request["body"]["model"] == "judge-model" and request["body"]["temperature"] == 0
    assert KEY not in judge.judge_id


def test_openai_judge_retries_after_http_500(server, api_key):
    server.script = [(500, '{"error": "overloaded"}'), (503, "busy")]
    assert _openai(server).complete("hi") == "ok"
    assert len(server.requests) == 3


def test_openai_judge_retries_after_a_timeout(server, api_key):
    server.script = [("sleep", "1.0")]
    assert _openai(server, timeout=0.2).complete("hi") == "ok"
    assert len(server.requests) == 2
    server.script = [("sleep", "1.0")] * 2
    with pytest.raises(LLMError, match="after 2 attempt.*timed out"):
        _openai(server, timeout=0.2, retries=1).complete("hi")


def test_openai_judge_persistent_error_names_url_and_status_not_key(server, api_key):
    server.script = [(500, f"internal error while using {KEY}")] * 3
    with pytest.raises(LLMError) as info:
        _openai(server, retries=2).complete("hi")
    message = str(info.value)
    assert server.base_url + "/chat/completions" in message and "HTTP 500" in message and "3 attempt" in message
    assert KEY not in message
    assert len(server.requests) == 3


def test_openai_judge_does_not_retry_a_rejected_key(server, api_key):
    server.script = [(401, '{"error": "invalid key"}')]
    with pytest.raises(LLMError, match="HTTP 401"):
        _openai(server).complete("hi")
    assert len(server.requests) == 1


def test_openai_judge_malformed_reply_is_retried_then_reported(server, api_key):
    server.script = [(200, "<html>proxy error</html>"), (200, '{"choices": []}')]
    with pytest.raises(LLMError, match="not a chat completion"):
        _openai(server, retries=1).complete("hi")
    server.script = [(200, "<html>proxy error</html>")]
    assert _openai(server, retries=1).complete("hi") == "ok"


def _mmhal_files(tmp_path):
    questions = [
        {"question_type": "attribute", "question": "What colour is the cat?", "gt_answer": "Black.",
         "image_content": ["cat", "sofa"]},
        {"question_type": "counting", "question": "How many cups?", "gt_answer": "Two.", "image_content": ["cup"]},
    ]  # fmt: skip
    (tmp_path / "mmhal.json").write_text(json.dumps(questions))
    rows = [
        {"id": "0", "question": "q", "response": "The cat is black.", "bench": "mmhal", "model": "m", "decoding": {}},
        {"id": "1", "question": "q", "response": "Three cups.", "bench": "mmhal", "model": "m", "decoding": {}},
    ]
    (tmp_path / "mmhal.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _score_args(tmp_path, judge_spec):
    parser = argparse.ArgumentParser()
    judged.add_arguments(parser)
    return parser.parse_args(
        ["--bench", "mmhal", "--responses", str(tmp_path / "mmhal.jsonl"), "--questions", str(tmp_path / "mmhal.json"),
         "--judge", judge_spec, "--out", str(tmp_path / "out"), "--judge-retries", "1", "--judge-workers", "2"]
    )  # fmt: skip


def test_scoring_over_http_is_cached_reproducible_and_keeps_the_key_out(tmp_path, server, api_key):
    # The first reply to the counting question is unparsable: the scorer re-asks, and the second reply is read.
    def reply(prompt):
        if "Three cups" not in prompt:
            return "Accurate and informative.\nRating: 5"
        return "Rating: 1" if "Your previous reply" in prompt else "I cannot decide."

    server.reply = reply
    _mmhal_files(tmp_path)
    assert judged.run(_score_args(tmp_path, f"openai:judge-model@{server.base_url}")) == 0
    (path,) = (tmp_path / "out").glob("mmhal.*.metrics.json")
    results = json.loads(path.read_text())
    assert results["metrics"]["score"] == 3.0 and results["metrics"]["hallucination_rate"] == 0.5
    assert results["judge_id"] == f"openai:judge-model@{server.base_url}"
    assert results["n_flagged"] == 0 and results["judge_calls"] == {"new": 3, "cached": 0}
    assert len(server.requests) == 3

    assert judged.run(_score_args(tmp_path, f"openai:judge-model@{server.base_url}")) == 0
    assert len(server.requests) == 3  # every answer came from the cache
    rerun = json.loads(path.read_text())
    assert rerun["metrics"] == results["metrics"] and rerun["judge_calls"] == {"new": 0, "cached": 3}

    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any("judge_cache" in str(p) for p in written)
    for path in written:
        assert KEY not in path.read_text(errors="replace"), path


def test_hf_judge_from_a_tiny_causal_lm_answers_and_is_cached(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    from dama.tiny import build_tokenizer

    tokenizer = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(tmp_path / "lm")
    tokenizer.save_pretrained(tmp_path / "lm")

    judge = build_judge(f"hf:{tmp_path / 'lm'}", cache_dir=tmp_path / "cache", max_tokens=6, device="cpu")
    assert judge.judge_id.startswith("hf:") and str(tmp_path / "lm") in judge.judge_id
    seen, generate = [], judge.inner.model.generate

    def recording(**kwargs):
        seen.append(judge.inner.tokenizer.decode(kwargs["input_ids"][0]))
        return generate(**kwargs)

    judge.inner.model.generate = recording
    reply = judge.complete("Is there a cat? Answer yes or no.")
    assert isinstance(reply, str) and reply == judge.inner.complete("Is there a cat? Answer yes or no.")
    # the tokenizer's chat template wrapped the prompt
    assert seen[0].startswith("USER: Is there a cat? Answer yes or no.") and seen[0].endswith("ASSISTANT: ")

    def refuse(*args, **kwargs):
        raise AssertionError("the cached prompt reached the model")

    judge.inner.model.generate = refuse
    assert judge.complete("Is there a cat? Answer yes or no.") == reply
    assert judge.hits == 1 and judge.calls == 1

    # a template that cannot render a lone system message is an LLMError naming the way out, not a traceback
    judge.inner.tokenizer.chat_template = "{{ raise_exception('Conversation roles must alternate user/assistant') }}"
    with pytest.raises(LLMError, match="cannot render a lone system message .*--prompt dama-v1"):
        judge.complete("List the objects.", role="system")


def _mmhal_argv(tmp_path, judge: str, *extra: str) -> list[str]:
    return ["eval", "score", "--bench", "mmhal", "--responses", str(tmp_path / "mmhal.jsonl"), "--questions",
            str(tmp_path / "mmhal.json"), "--judge", judge, *extra]  # fmt: skip


def test_a_judge_endpoint_that_cannot_answer_exits_4_through_the_cli(tmp_path, server, api_key, capsys):
    """An endpoint down (5xx after the retries) is not the input's fault: exit 4 (docs/errors.md), one line naming the
    endpoint, never the key, and no results file; the replies received so far are cached for the rerun."""
    from dama.cli import main as dama

    server.script = [(502, "bad gateway")] * 2
    _mmhal_files(tmp_path)
    argv = _mmhal_argv(tmp_path, f"openai:judge-model@{server.base_url}", "--judge-retries", "1")
    assert dama(argv) == 4
    err = capsys.readouterr().err
    assert "Traceback" not in err and "dama eval score: error: " in err
    assert f"{server.base_url}/chat/completions failed after 2 attempt(s): HTTP 502" in err and KEY not in err
    assert "a rerun continues" in err
    assert not list(tmp_path.glob("*.metrics.json"))


def test_a_refused_key_or_a_bad_judge_spec_is_a_user_error_through_the_cli(tmp_path, server, api_key, capsys):
    """Settings the user must fix exit 2: a key the endpoint refuses (HTTP 401, not retried), a spec that does not
    parse. Neither says that a rerun continues: rerunning the same command cannot help."""
    from dama.cli import main as dama

    server.script = [(401, "invalid key")]
    _mmhal_files(tmp_path)
    assert dama(_mmhal_argv(tmp_path, f"openai:judge-model@{server.base_url}")) == 2
    err = capsys.readouterr().err
    assert "dama eval score: error: " in err and "HTTP 401" in err and KEY not in err
    assert "a rerun continues" not in err
    assert dama(_mmhal_argv(tmp_path, "openai:")) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "judge spec 'openai:'" in err


def test_debug_shows_the_traceback_of_a_judge_error(tmp_path, server, api_key):
    from dama.cli import main as dama

    server.script = [(502, "bad gateway")] * 2
    _mmhal_files(tmp_path)
    with pytest.raises(LLMError, match="HTTP 502"):
        dama(["--debug", *_mmhal_argv(tmp_path, f"openai:judge-model@{server.base_url}", "--judge-retries", "1")])


def test_system_role_is_sent_as_the_only_message_and_cached_apart(tmp_path, server, api_key):
    server.reply = lambda prompt: f"echo: {prompt}"
    judge = CachedJudge(_openai(server), tmp_path)
    assert judge.complete("list objects", role="system") == "echo: list objects"
    assert judge.complete("list objects") == "echo: list objects"  # a user message is another request
    assert [r["body"]["messages"] for r in server.requests] == [
        [{"role": "system", "content": "list objects"}],
        [{"role": "user", "content": "list objects"}],
    ]
    assert judge.complete("list objects", role="system") == "echo: list objects" and judge.hits == 1
    with pytest.raises(ValueError, match="unknown message role"):
        judge.complete("x", role="assistant")
