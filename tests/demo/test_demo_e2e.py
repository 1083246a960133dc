"""`dama demo --quick` end to end, as CI runs it: every stage runs, the numbers are sane, and the quick world has
the basic properties a comparison needs: the base model sees more than it guesses, the pairs carry no
length shortcut, and CLIP's δ correlates with the ground-truth gap.

It asserts that the pipeline and the testbed work, not which method wins (that is what the report is for).
"""

from __future__ import annotations

import json
import math

from dama.cli import main as dama_main


def test_quick_demo_runs_every_stage(tmp_path, quick_cache):
    out = tmp_path / "demo"
    assert dama_main(["demo", "--quick", "--out", str(out), "--cache-dir", str(quick_cache)]) == 0
    summary = json.loads((out / "results.json").read_text())
    cfg = summary["config"]

    assert set(summary["timings"]) == {"models", "base_eval_and_preferences", "hardness", "runs: DPO, DAMA"}
    assert summary["n_pairs"] >= 16
    assert (out / "hardness" / "hardness.json").is_file()
    assert -1.0 <= summary["delta_mean"] <= 1.0
    assert all(-1.0 <= d <= 1.0 for d in summary["deltas"])
    assert all(g >= 1 for g in summary["pair_gaps"])  # a pair needs strictly fewer hallucinations in the chosen
    assert summary["build_metrics"]["clip"]["retrieval_top1"] > summary["build_metrics"]["clip"]["retrieval_chance"]

    # Validity of the quick world (measured: recall 69.7, CHAIR_i 29.2, CHAIR_s 50.0): the base model sees and
    # hallucinates within the ranges, as the full preset's does ...
    base = summary["per_seed"]["base"][0]
    assert base["recall"] > base["CHAIR_i"] > 0.0, base
    for check in ("base recall", "base CHAIR_i", "base CHAIR_s"):
        assert summary["validity"][check]["ok"], (check, summary["validity"][check])
    # ... and CLIP's δ of the atomic statements tracks the ground-truth gap (measured +0.27 here, +0.32 on the
    # full preset; +0.04 with the quick preset's earlier 600-step CLIP), agreeing with the label for most pairs.
    signal = summary["hardness_signal"]["union_softmax"]
    assert signal["corr_gap"] > 0.1 and signal["positive_fraction"] > 0.6 and signal["mean"] > 0.0, signal
    balance = summary["length_balance"]
    assert abs(balance["relative_length_difference"]) < 0.25, balance

    assert set(summary["per_seed"]) == {"base", "DPO", "DAMA"}
    for name, per_seed in summary["per_seed"].items():
        assert len(per_seed) == (1 if name == "base" else len(cfg["seeds"])), name
        for metrics in per_seed:
            assert metrics["n_responses"] == cfg["n_eval_images"], name
            for key in ("CHAIR_s", "recall"):
                assert 0.0 <= metrics[key] <= 100.0, (name, key)
            assert metrics["CHAIR_i"] is None or 0.0 <= metrics["CHAIR_i"] <= 100.0
            assert math.isfinite(metrics["avg_len"])

    # The frontier: every method at every lr of the preset's grid with every seed, paired with DPO's.
    grid = cfg["learning_rates"]
    for method in ("DPO", "DAMA"):
        entries = summary["frontier"]["short"][method]
        assert sorted((e["lr"], e["seed"]) for e in entries) == sorted((lr, s) for lr in grid for s in cfg["seeds"])
        for e in entries:
            assert {"lr", "seed", "CHAIR_i", "CHAIR_s", "recall", "avg_len", "beta_h_easy", "beta_h_hard"} <= set(e)
            assert e["beta_h_hard"] is None or math.isfinite(e["beta_h_hard"])
    matched = summary["matched_recall"]["short"]["DAMA"]
    assert set(matched) >= {"recalls", "mean", "low", "high", "overall", "overlap"}
    assert len(matched["recalls"]) == len(matched["mean"]) == len(matched["low"])
    regime = summary["regimes"]["short"]
    assert regime["grid"] == grid and regime["settings"]["steps"] == cfg["steps"]
    assert [row["lr"] for row in regime["equal_lr"]["DAMA"]] == sorted(grid)

    # The single-point rule (a labelled row): it picked one lr of the grid per method from the first seed's
    # validation numbers.
    for method, sweep in summary["sweep"].items():
        assert [c["lr"] for c in sweep["candidates"]] == grid, method
        assert sweep["lr"] in grid
    # Paired comparison with DPO: one difference per seed, an interval with two or more seeds.
    ci = summary["comparison"]["DAMA"]["CHAIR_i"]
    assert ci["n"] == len(cfg["seeds"]) and ci["low"] <= ci["mean"] <= ci["high"]
    assert set(summary["validity"]) >= {"base recall", "corr(δ, gap)", "DPO CHAIR_i", "pair length balance"}

    runs = summary["runs"]["short"]  # the runs at the grid's middle lr keep their histories and margin curves
    dama_history = runs["DAMA"][0]["history"]
    logged = [h for h in dama_history if "dama/alpha_m" in h]
    assert len(logged) == cfg["steps"]
    assert all(math.isfinite(h["loss"]) and h["dama/kept_fraction"] < 1.0 for h in logged)
    assert not any("dama/alpha_m" in h for h in runs["DPO"][0]["history"])
    assert {"easy (gap)", "hard (gap)", "easy (δ)", "hard (δ)"} <= set(runs["DPO"][0]["margins"][0])

    report = (out / "report.md").read_text()
    assert "| DAMA |" in report and "**Verdict per regime**" in report and "Is this a valid testbed?" in report
    assert "Verdict at matched recall" in report and "Single-point rule" in report
    for plot in ("frontier.png", "results.png", "beta_vs_delta.png", "model_aware.png", "responsiveness.png"):
        assert (out / plot).stat().st_size > 1000, plot
