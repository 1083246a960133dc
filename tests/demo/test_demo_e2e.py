"""`dama demo --quick` end to end, as CI runs it: every stage runs and produces sane numbers.

It asserts that the pipeline works, not which method wins (that is what the report is for).
"""

from __future__ import annotations

import json
import math

from dama.cli import main as dama_main


def test_quick_demo_runs_every_stage(tmp_path):
    out = tmp_path / "demo"
    assert dama_main(["demo", "--quick", "--out", str(out), "--cache-dir", str(tmp_path / "cache")]) == 0
    summary = json.loads((out / "results.json").read_text())

    assert set(summary["timings"]) == {"models", "preferences", "hardness", "alignment_and_eval"}
    assert summary["n_pairs"] >= 16
    assert (out / "hardness" / "hardness.json").is_file()
    assert -1.0 <= summary["delta_mean"] <= 1.0
    assert all(-1.0 <= d <= 1.0 for d in summary["deltas"])
    assert summary["build_metrics"]["clip"]["retrieval_top1"] > summary["build_metrics"]["clip"]["retrieval_chance"]

    assert set(summary["per_seed"]) == {"base", "DPO", "DAMA", "data-aware only", "model-aware only"}
    for name, per_seed in summary["per_seed"].items():
        for metrics in per_seed:
            assert metrics["n_responses"] == summary["config"]["n_eval_images"], name
            for key in ("CHAIR_s", "recall"):
                assert 0.0 <= metrics[key] <= 100.0, (name, key)
            assert metrics["CHAIR_i"] is None or 0.0 <= metrics["CHAIR_i"] <= 100.0
            assert math.isfinite(metrics["avg_len"])
    base = summary["per_seed"]["base"][0]
    assert base["n_hallucinated_mentions"] > 0 and base["CHAIR_i"] > 0.0  # the base model hallucinates

    dama_history = summary["runs"]["DAMA"][0]["history"]
    logged = [h for h in dama_history if "dama/alpha_m" in h]
    assert len(logged) == summary["config"]["steps"]
    assert all(math.isfinite(h["loss"]) and h["dama/kept_fraction"] < 1.0 for h in logged)
    dpo_history = summary["runs"]["DPO"][0]["history"]
    assert not any("dama/alpha_m" in h for h in dpo_history)

    report = (out / "report.md").read_text()
    assert "| DAMA |" in report and "Verdict" in report
    for plot in ("results.png", "beta_vs_delta.png", "model_aware.png", "responsiveness.png"):
        assert (out / plot).stat().st_size > 1000, plot
