"""The benchmark registry: every record satisfies the interface, and the CLIs' --bench choices come from it."""

from __future__ import annotations

import argparse
import inspect

import pytest

from dama.eval import generate, registry
from dama.eval.benchmark import Benchmark, Decoding
from dama.eval.cli import _score_parser

ALL = list(registry.BENCHMARKS.values())


def _choices(parser: argparse.ArgumentParser, flag: str) -> list[str]:
    return list(parser._option_string_actions[flag].choices)


def test_the_registry_holds_every_benchmark_once_under_its_name():
    assert {"chair", "object-halbench", "amber", "amber-g", "amber-d", "pope", "mmhal", "llava-bench", "mmvet",
            "generic"} <= set(registry.BENCHMARKS)  # fmt: skip
    for name, benchmark in registry.BENCHMARKS.items():
        assert isinstance(benchmark, Benchmark) and benchmark.name == name
        assert benchmark.summary and (benchmark.generates or benchmark.scores)


@pytest.mark.parametrize("benchmark", ALL, ids=lambda b: b.name)
def test_every_benchmark_satisfies_the_interface(benchmark):
    if benchmark.generates:
        assert isinstance(benchmark.decoding, Decoding)
        assert benchmark.decoding.num_beams >= 1 and benchmark.decoding.max_new_tokens >= 1
        assert len(inspect.signature(benchmark.read_questions).parameters) == 1  # (path) -> items
    if benchmark.scores:
        parser = _score_parser(benchmark.name)  # its options go into `dama eval score` without a clash
        options = parser._option_string_actions
        assert {"--bench", "--responses", "--out", "--strict"} <= set(options)
        assert options["--responses"].required
        assert len(inspect.signature(benchmark.score).parameters) == 1  # (args) -> exit status


def test_a_half_record_is_refused():
    with pytest.raises(TypeError, match="go together"):
        Benchmark(name="x", summary="x", decoding=Decoding())
    with pytest.raises(TypeError, match="go together"):
        Benchmark(name="x", summary="x", score=lambda args: 0)


def test_the_cli_choices_come_from_the_registry():
    scored = [name for name, b in registry.BENCHMARKS.items() if b.scores]
    generated = [name for name, b in registry.BENCHMARKS.items() if b.generates]
    assert _choices(_score_parser(None), "--bench") == scored == registry.score_names()
    parser = argparse.ArgumentParser()
    generate.add_arguments(parser)
    assert _choices(parser, "--bench") == sorted(generated) == sorted(registry.generate_names())
    assert generate.PRESETS == {name: registry.BENCHMARKS[name].decoding for name in generated}


def test_a_registered_benchmark_is_offered_by_both_commands(monkeypatch, tmp_path, capsys):
    """The registry line is all the CLI needs: a new record is scored and generated for without any other change."""
    calls = []

    def add_arguments(parser):
        parser.add_argument("--responses", required=True)
        parser.add_argument("--out")
        parser.add_argument("--strict", action="store_true")
        parser.add_argument("--answer-key", required=True)

    def score(args):
        calls.append((args.bench, args.responses, args.answer_key))
        return 0

    new = Benchmark(
        name="toy",
        summary="a toy benchmark",
        decoding=Decoding(num_beams=1, max_new_tokens=8),
        read_questions=lambda path: [{"id": "1", "question": "Q?", "image": "x.png", "where": f"{path}:1"}],
        add_arguments=add_arguments,
        score=score,
    )
    monkeypatch.setitem(registry.BENCHMARKS, "toy", new)
    from dama.eval.cli import main

    assert main(["score", "--bench", "toy", "--responses", "r.jsonl", "--answer-key", "k.json"]) == 0
    assert calls == [("toy", "r.jsonl", "k.json")]
    assert generate.read_questions("toy", tmp_path / "q.json")[0]["question"] == "Q?"
