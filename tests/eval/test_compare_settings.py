"""`dama eval compare` never puts numbers made with different scoring settings side by side unmarked."""

from __future__ import annotations

import json

import pytest

from dama.cli import main as dama
from dama.eval.compare import compare_table, settings
from dama.eval.records import RecordError


def main(argv: list[str]) -> int:
    """`dama eval ...` through the real CLI (its dispatcher prints errors and picks the exit code)."""
    return dama(["eval", *argv])


def _write(folder, name, extraction, synonyms_sha="a" * 64, chair_i=10.0):
    folder.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": "object-halbench",
        "split": "val2014",
        "extraction": extraction,
        "synonyms": {"version": "chair-refined-v1", "sha256": synonyms_sha},
        "metrics": {"CHAIR_i": chair_i, "n_mentions": 10},
    }
    (folder / name).write_text(json.dumps(result))


LLM = {"mode": "llm", "judge_id": "openai:gpt-3.5-turbo-0613", "prompt": "rlaif-v", "prompt_sha256": "p1"}


def test_same_settings_are_not_marked(tmp_path):
    _write(tmp_path / "a", "object-halbench_llm.metrics.json", LLM)
    _write(tmp_path / "b", "object-halbench_llm.metrics.json", LLM, chair_i=20.0)
    table = compare_table([tmp_path / "a", tmp_path / "b"])
    assert "≠" not in table and "| 10.00 | 20.00 |" in table


@pytest.mark.parametrize(
    ("changed", "field"),
    [
        ({**LLM, "prompt": "dama-v1", "prompt_sha256": "p2"}, "extraction.prompt"),
        ({**LLM, "reduction": "approx"}, "extraction.reduction"),
    ],
)
def test_different_prompt_or_extraction_is_marked_or_refused(tmp_path, changed, field):
    _write(tmp_path / "a", "object-halbench_llm.metrics.json", LLM)
    _write(tmp_path / "b", "object-halbench_llm.metrics.json", changed)
    table = compare_table([tmp_path / "a", tmp_path / "b"])
    assert "| object-halbench [val2014, llm, judge=openai:gpt-3.5-turbo-0613] ≠ / CHAIR_i |" in table
    assert f"{field} differs" in table
    with pytest.raises(RecordError, match=f"not comparable: .*{field} differs"):
        compare_table([tmp_path / "a", tmp_path / "b"], mixed="refuse")


def test_different_synonym_lists_are_marked_and_cli_refuses(tmp_path, capsys):
    _write(tmp_path / "a", "object-halbench_llm.metrics.json", LLM)
    _write(tmp_path / "b", "object-halbench_llm.metrics.json", LLM, synonyms_sha="b" * 64)
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert "synonyms differs" in capsys.readouterr().out
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--refuse-mixed"]) == 2
    assert "not comparable" in capsys.readouterr().err


def test_settings_leave_out_counts():
    result = {"extraction": {"mode": "rule", "n_fallback": 3}, "judge_id": "x", "metrics": {}}
    assert settings(result) == {"extraction.mode": "rule", "judge_id": "x"}


def test_amber_score_reported_uses_the_reported_chair_and_f1(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    g = {"benchmark": "amber-g", "split": "generative", "metrics": {"CHAIR": 10.04, "CHAIR_reported": 10.0}}
    d = {"benchmark": "amber-d", "split": "discriminative", "metrics": {"f1": 80.0, "f1_reported": 79.9}}
    (run / "amber-g.metrics.json").write_text(json.dumps(g))
    (run / "amber-d.metrics.json").write_text(json.dumps(d))
    table = compare_table([run])
    # AMBER score = ((100 - CHAIR) + F1) / 2 (Wang et al. 2023): exact (89.96 + 80.0) / 2 = 84.98,
    # reported (90.0 + 79.9) / 2 = 84.95
    assert "| amber / AMBER_score | 84.98 |" in table and "| amber / AMBER_score_reported | 84.95 |" in table
