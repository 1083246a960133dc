"""Splitters: offline sentence splitting with cleanup, stored columns, and the LLM backends (local and endpoint)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from dama.hardness.splitters import (
    INSTRUCTION,
    ColumnSplitter,
    LLMSplitter,
    SplitRequest,
    clean_fragment,
    merge_short,
    parse_statements,
)
from dama.llm import ChatEndpoint, LLMError, LocalLM, SqliteReplyCache


def test_sentence_splitter_basic(splitter):
    text = "The image shows a cat, e.g. a tabby. It sits on the mat! Is there a dog? No, there is no dog."
    assert splitter.split_text(text) == [
        "The image shows a cat, e.g. a tabby.",
        "It sits on the mat!",
        "Is there a dog?",
        "No, there is no dog.",
    ]


def test_sentence_splitter_strips_list_markers_and_markdown(splitter):
    text = (
        "Objects:\n1. A red bus on the street.\n2) **A tall tree** behind it.\n- A person with an umbrella\n* Two cars"
    )
    assert splitter.split_text(text) == [
        "Objects: A red bus on the street.",  # "Objects:" alone is too short: merged into the next sentence
        "A tall tree behind it.",
        "A person with an umbrella; Two cars",  # "Two cars" too: merged into the previous item
    ]


def test_short_fragments_are_merged_not_lost():
    assert merge_short(["Yes.", "The cat is black.", "Ok.", "1.", "..."], min_words=3) == [
        "Yes. The cat is black. Ok."
    ]
    assert merge_short(["Yes."], min_words=3) == ["Yes."]  # a one-word answer stays one sub-sentence
    assert merge_short(["1.", "—", "..."], min_words=3) == []  # nothing with a letter: no sentence
    assert clean_fragment("  3. - **Bold** text ") == "Bold text"


def test_sentence_splitter_empty_and_markers_only(splitter):
    assert splitter.split_text("") == []
    assert splitter.split_text("1.\n2.\n- ...") == []


def test_column_splitter_reads_stored_subsentences():
    split = ColumnSplitter("cw", "cl")
    row = {"cw": ["A cat.", "  ", "A dog."], "cl": "A bus.\nA car."}
    out = split.split([SplitRequest("q", "r", "chosen", row), SplitRequest("q", "r", "rejected", row)])
    assert out == [["A cat.", "A dog."], ["A bus.", "A car."]]
    assert split.split([SplitRequest("q", "r", "chosen", {"cw": None, "cl": None})]) == [[]]


def test_parse_statements():
    answer = "Here are the statements:\n1. The cat is red.\n- There are two dogs.\n\n* The cat is red.\n...\n"
    assert parse_statements(answer) == ["The cat is red.", "There are two dogs."]


class CountingGenerator:
    cache_key = "fake:v1"

    def __init__(self):
        self.calls: list[list[str]] = []

    def generate(self, prompts):
        self.calls.append(list(prompts))
        return [f"- statement one of {len(p)}.\n- statement two." for p in prompts]


def test_llm_splitter_caches_every_call(tmp_path):
    gen = CountingGenerator()
    cache = SqliteReplyCache(tmp_path / "cache.sqlite")
    split = LLMSplitter(gen, cache, batch_size=2)
    reqs = [SplitRequest("What is there?", f"Answer number {i}.", "chosen") for i in range(3)]
    reqs.append(reqs[0])  # a repeated prompt is generated once
    first = split.split(reqs)
    assert [len(c) for c in gen.calls] == [2, 1]
    assert first[0] == first[3] and len(first[0]) == 2
    assert INSTRUCTION in gen.calls[0][0] and "Answer number 0." in gen.calls[0][0]
    # a new splitter on the same cache file asks nothing
    gen2 = CountingGenerator()
    again = LLMSplitter(gen2, SqliteReplyCache(tmp_path / "cache.sqlite")).split(reqs)
    assert again == first and gen2.calls == []
    assert len(cache) == 3


def test_local_generator_tiny_causal_lm(tmp_path):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from dama.tiny import build_tokenizer

    tok = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    gen = LocalLM(LlamaForCausalLM(config), tok, max_new_tokens=6, name="tiny-llama")
    prompts = ["Describe: a cat.", "Describe the picture with a dog and a much longer question here."]
    batched = gen.generate(prompts)
    assert len(batched) == 2 and all(isinstance(b, str) for b in batched)
    assert batched == [gen.generate([p])[0] for p in prompts]  # left padding: batching changes nothing
    split = LLMSplitter(gen, SqliteReplyCache(tmp_path / "c.sqlite"), batch_size=2)
    out = split.split([SplitRequest("q", "A cat sits.", "chosen"), SplitRequest("q", "A dog runs.", "rejected")])
    assert len(out) == 2 and all(isinstance(s, list) for s in out)


class FakeOpenAI(BaseHTTPRequestHandler):
    """/v1/chat/completions answers statements; /down/v1/... answers 500; /auth/v1/... answers 401."""

    requests: list[dict] = []

    def do_POST(self):  # noqa: N802 - http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeOpenAI.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
        if self.path.startswith("/down"):
            return self._reply(500, {"error": {"message": "model overloaded"}})
        if self.path.startswith("/auth"):
            return self._reply(401, {"error": {"message": "bad key"}})
        if self.path.startswith("/weird"):
            return self._reply(200, {"nothing": True})
        prompt = body["messages"][0]["content"]
        answer = (
            "Statements:\n1. The cat is red.\n2. The cat sits on a mat."
            if "cat" in prompt.split("Answer:")[1]
            else "- A bus is blue."
        )
        return self._reply(200, {"choices": [{"message": {"role": "assistant", "content": answer}}]})

    def _reply(self, code, payload):
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    FakeOpenAI.requests = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_openai_endpoint_parsing_caching_and_key(fake_server, tmp_path, monkeypatch):
    monkeypatch.setenv("MY_TEST_KEY", "sk-test")
    gen = ChatEndpoint(f"{fake_server}/v1", "judge-model", api_key_env="MY_TEST_KEY", concurrency=2)
    split = LLMSplitter(gen, SqliteReplyCache(tmp_path / "c.sqlite"))
    reqs = [SplitRequest("What?", "A red cat on a mat.", "chosen"), SplitRequest("What?", "A blue bus.", "rejected")]
    assert split.split(reqs) == [["The cat is red.", "The cat sits on a mat."], ["A bus is blue."]]
    assert len(FakeOpenAI.requests) == 2
    sent = FakeOpenAI.requests[0]
    assert sent["path"] == "/v1/chat/completions" and sent["auth"] == "Bearer sk-test"
    assert sent["body"]["model"] == "judge-model" and sent["body"]["temperature"] == 0
    assert split.split(reqs)[0][0] == "The cat is red." and len(FakeOpenAI.requests) == 2  # cached


@pytest.mark.parametrize(("prefix", "expected"), [("down", "HTTP 500"), ("auth", "HTTP 401"), ("weird", "choices")])
def test_openai_endpoint_errors_surface(fake_server, prefix, expected):
    gen = ChatEndpoint(f"{fake_server}/{prefix}/v1", "m", api_key_env="DAMA_UNSET_KEY_FOR_TEST", retries=0)
    with pytest.raises(LLMError) as info:
        LLMSplitter(gen).split([SplitRequest("q", "A cat.", "chosen")])
    message = str(info.value)
    assert expected in message and fake_server in message
    if prefix == "down":
        assert "model overloaded" in message
    if prefix == "auth":
        assert "$DAMA_UNSET_KEY_FOR_TEST" in message


def test_openai_endpoint_unreachable():
    gen = ChatEndpoint("http://127.0.0.1:9/v1", "m", retries=0, timeout=2)
    with pytest.raises(LLMError, match="cannot reach"):
        gen.generate(["hello"])


def test_cli_llm_splitter_through_an_endpoint(fake_server, tmp_path, clip_dir):
    from hardness_rows import make_rows, write_parquet

    from dama.cli import main as dama
    from dama.hardness import read_hardness_output
    from dama.hardness.cli import main

    data = write_parquet(tmp_path / "d.parquet", make_rows(3))
    argv = [
        "--data",
        str(data),
        "--clip",
        str(clip_dir),
        "--out",
        str(tmp_path / "o"),
        "--workers",
        "0",
        "--no-progress",
        "--splitter",
        "llm",
        "--llm-endpoint",
        f"{fake_server}/v1",
        "--llm-model",
        "m",
    ]
    assert main(argv) == 0
    out, _ = read_hardness_output(tmp_path / "o")
    assert out["chosen_subsentences"][0] == ["The cat is red.", "The cat sits on a mat."]
    assert out["rejected_subsentences"][0] == ["A bus is blue."]
    assert len(FakeOpenAI.requests) == 6 and (tmp_path / "o" / ".llm_cache.sqlite").is_file()
    assert (
        main([*argv[:5], str(tmp_path / "o2"), *argv[6:], "--llm-cache", str(tmp_path / "o" / ".llm_cache.sqlite")])
        == 0
    )
    assert len(FakeOpenAI.requests) == 6  # all answers came from the cache
    argv[-3] = f"{fake_server}/down/v1"
    assert (
        dama(["hardness", *argv[:5], str(tmp_path / "o3"), *argv[6:], "--llm-retries", "0"]) == 4
    )  # an endpoint that cannot answer: docs/errors.md, exit 4
