"""β-DPO and mDPO inside DAMATrainer on tiny config-built VLMs: metrics, crops, refusals, the non-finite stop."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import cpu_config, make_vision_pairs

from dama import DAMATrainer
from dama.config import RecipeError
from dama.errors import NonFiniteError
from dama.tiny import build_llava, build_qwen2_vl, clone

ROOT = Path(__file__).resolve().parents[2]
LOG2 = math.log(2.0)
BETA_DPO = dict(beta_dpo=True, data_aware=False, model_aware=False, keep_ratio=0.75)
MDPO = dict(mdpo=True, data_aware=False, model_aware=False, keep_ratio=1.0)


def run(tmp_path, build=build_llava, n=8, **overrides):
    model, processor = build(seed=2) if build is build_llava else build()
    config = cpu_config(str(tmp_path), max_steps=overrides.pop("max_steps", 4), **overrides)
    trainer = DAMATrainer(model=model, ref_model=clone(model), args=config,
                          train_dataset=make_vision_pairs(n, textured=True), processing_class=processor)  # fmt: skip
    trainer.train()
    return trainer, [h for h in trainer.state.log_history if "loss" in h]


def test_beta_dpo_trains_and_logs_its_statistics(tmp_path):
    trainer, logs = run(tmp_path, max_steps=6, learning_rate=2e-2, **BETA_DPO)
    assert logs[0]["loss"] == pytest.approx(LOG2, abs=1e-5)  # step 0: every margin 0, β_used = β
    assert logs[0]["beta_dpo/beta_used"] == pytest.approx(0.1)
    for h in logs:
        assert h["beta_dpo/kept_fraction"] == pytest.approx(0.75)  # ⌊0.75 · 4⌋ of each micro-batch
        # one β for the batch: mean = min = max = β_used
        assert h["dama/beta_min"] == pytest.approx(h["beta_dpo/beta_used"], rel=1e-5)
        assert h["dama/beta_max"] == pytest.approx(h["beta_dpo/beta_used"], rel=1e-5)
    assert logs[-1]["beta_dpo/beta_used"] != pytest.approx(0.1)  # β moved with the margins
    assert trainer.reward_gap.num_updates == 6 and trainer.reward_gap.std > 0.0
    assert logs[-1]["beta_dpo/gap_mean"] == pytest.approx(trainer.reward_gap.mean, rel=1e-5)


def test_beta_dpo_with_data_aware_scales_its_beta_per_pair(tmp_path):
    _, logs = run(tmp_path, max_steps=2, **{**BETA_DPO, "data_aware": True})
    assert logs[0]["dama/beta_min"] < logs[0]["beta_dpo/beta_used"] < logs[0]["dama/beta_max"]
    assert "dama/alpha_d_mean" in logs[0]


@pytest.mark.parametrize("build", [build_llava, build_qwen2_vl], ids=["llava", "qwen2-vl"])
def test_mdpo_paired_crops_give_zero_image_margin_at_step_zero(tmp_path, build):
    """With `paired` crops policy and reference see the same I′; at step 0 (policy = reference) every log-ratio is
    0, so each of the three terms is log 2, although log π(y_w|I′) differs from log π(y_w|I) (the crop is real)."""
    _, logs = run(tmp_path, build=build, max_steps=6, learning_rate=2e-2, **MDPO)
    first = logs[0]
    for term in ("mdpo/loss_dpo", "mdpo/loss_image", "mdpo/loss_anchor"):
        assert first[term] == pytest.approx(LOG2, abs=1e-5), term
    assert first["loss"] == pytest.approx(3 * LOG2, abs=1e-5)
    assert first["logps/imageless_chosen"] != pytest.approx(first["logps/chosen"], abs=1e-3)
    assert logs[-1]["loss"] < first["loss"]
    assert logs[-1]["mdpo/loss_image"] < LOG2  # the policy learned to prefer y_w with the real image


def test_mdpo_fresh_crops_differ_between_policy_and_reference(tmp_path):
    """`fresh` (official): the reference draws its own crop, so already at step 0 h_img ≠ 0 and ℓ_image ≠ log 2."""
    _, logs = run(tmp_path, max_steps=1, mdpo_crop="fresh", **MDPO)
    assert logs[0]["mdpo/loss_image"] != pytest.approx(LOG2, abs=1e-4)
    assert logs[0]["mdpo/loss_dpo"] == pytest.approx(LOG2, abs=1e-5)


def test_mdpo_crops_are_the_same_on_a_rerun(tmp_path):
    _, first = run(tmp_path / "a", max_steps=3, **MDPO)
    _, second = run(tmp_path / "b", max_steps=3, **MDPO)
    assert [h["loss"] for h in first] == [h["loss"] for h in second]


def test_beta_dpo_non_finite_beta_stops_training(tmp_path):
    with pytest.raises(NonFiniteError, match="β_C"):
        run(tmp_path, max_steps=3, learning_rate=5e-2, **{**BETA_DPO, "beta_dpo_alpha": 1e300})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(beta_dpo=True), "set model_aware: false"),
        (dict(beta_dpo=True, model_aware=False, reward_scale="beta_margin"), "reward_scale"),
        (dict(beta_dpo=True, model_aware=False, filter_std=True), "filter_std"),
        (dict(beta_dpo=True, model_aware=False, beta_dpo_alpha=-0.5), "beta_dpo_alpha must be ≥ 0"),
        (dict(beta_dpo=True, model_aware=False, beta_dpo_alpha=float("nan")), "beta_dpo_alpha must be a finite"),
        (dict(mdpo=True), "does not combine with data_aware, model_aware, keep_ratio=0.8"),
        (dict(mdpo=True, data_aware=False, model_aware=False, keep_ratio=1.0, beta_dpo=True), "beta_dpo"),
        (dict(MDPO, precompute_ref_log_probs=True), "precompute_ref_log_probs: false"),
        (dict(MDPO, mdpo_crop="random"), "mdpo_crop must be one of"),
        (dict(MDPO, loss_type=["ipo"]), "mDPO is built on the sigmoid"),
    ],
)
def test_combinations_no_paper_defines_are_refused(tmp_path, overrides, message):
    with pytest.raises(RecipeError, match=message):
        cpu_config(str(tmp_path), **overrides)


def test_mdpo_refuses_data_without_images(tmp_path):
    from helpers import make_vision_pairs as pairs

    data = pairs(4).remove_columns("image")
    model, processor = build_llava(seed=2)
    with pytest.raises(RecipeError, match="mdpo=True needs images"):
        DAMATrainer(model=model, ref_model=clone(model), args=cpu_config(str(tmp_path), **MDPO),
                    train_dataset=data, processing_class=processor)  # fmt: skip


def _dama_train(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dama.cli", "train", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600, env={"OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1",
                                                       **{k: v for k, v in __import__("os").environ.items()}})  # fmt: skip


def test_cli_mdpo_names_the_file_row_and_field_of_a_pair_without_an_image(tmp_path):
    rows = [json.loads(line) for line in (ROOT / "examples/tiny/pairs.jsonl").read_text().splitlines()[:4]]
    rows[2]["image"] = None
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    done = _dama_train("--config", str(ROOT / "recipes/tiny/mdpo.yaml"), "--dataset_path", str(data),
                       "--image_root", str(ROOT / "examples/tiny"), "--output_dir", str(tmp_path / "out"),
                       cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert str(data) in done.stderr and "row 2" in done.stderr and "field 'image'" in done.stderr
    assert "mdpo" in done.stderr
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_cli_mdpo_refuses_text_only_data(tmp_path):
    rows = [json.loads(line) for line in (ROOT / "examples/tiny/pairs.jsonl").read_text().splitlines()[:4]]
    data = tmp_path / "text.jsonl"
    # TRL's own (text-only) format: prompt / chosen / rejected, no image column
    data.write_text("".join(json.dumps({"prompt": r["question"], "chosen": r["chosen"], "rejected": r["rejected"]})
                            + "\n" for r in rows))  # fmt: skip
    done = _dama_train("--config", str(ROOT / "recipes/tiny/mdpo.yaml"), "--dataset_path", str(data),
                       "--output_dir", str(tmp_path / "out"), cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert str(data) in done.stderr and "mdpo=True needs an image in every pair" in done.stderr


@pytest.mark.parametrize("recipe", ["beta-dpo", "mdpo"])
def test_tiny_baseline_recipes_train_from_the_cli(tmp_path, recipe):
    import shutil

    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    shutil.copytree(ROOT / "recipes", tmp_path / "recipes")
    done = _dama_train("--config", f"recipes/tiny/{recipe}.yaml", "--max_steps", "3", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "runs" / f"tiny-{recipe}" / "model.safetensors").is_file()
