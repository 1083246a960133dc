"""`dama hardness` on the command line: success, a clear failure, the official import, and a real SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from hardness_rows import make_rows, write_parquet

from dama.cli import main as dama
from dama.hardness import read_hardness_output
from dama.hardness.cli import main

REPO = Path(__file__).resolve().parents[2]


def test_cli_runs_and_fails_clearly(tmp_path, clip_dir, capsys):
    rows = make_rows(6)
    data = write_parquet(tmp_path / "d.parquet", rows)
    argv = ["--data", str(data), "--clip", str(clip_dir), "--workers", "0", "--no-progress", "--shard-size", "4"]
    assert main([*argv, "--out", str(tmp_path / "o")]) == 0
    assert "wrote 6 pairs (0 skipped)" in capsys.readouterr().err
    rows[4]["rejected"] = ""
    bad = write_parquet(tmp_path / "bad.parquet", rows)
    argv[1] = str(bad)
    assert dama(["hardness", *argv, "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "dama hardness: error: " in err and "Traceback" not in err
    assert "row 4 field 'rejected': empty response" in err and "--on-error skip" in err
    assert not (tmp_path / "bad" / "hardness.json").exists()
    # other settings after shard 0 was written: refused, and the message says how to start again
    assert dama(["hardness", *argv, "--out", str(tmp_path / "bad"), "--on-error", "skip"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*argv, "--out", str(tmp_path / "bad"), "--on-error", "skip", "--overwrite"]) == 0
    data, _ = read_hardness_output(tmp_path / "bad")
    assert data["idx"] == [0, 1, 2, 3, 5]


def test_cli_official_import(tmp_path):
    records = [
        {
            "question": "q",
            "chosen": "c",
            "rejected": "r",
            "image_path": "a.jpg",
            "chosen_logits": [0.75],
            "rejected_logits": [0.25],
            "logps": [-1.0],
        }
    ]
    (tmp_path / "official.json").write_text(json.dumps(records))
    out = tmp_path / "o"
    assert main(["--data", str(tmp_path / "official.json"), "--official", "--out", str(out), "--no-progress"]) == 0
    _, delta_mean = read_hardness_output(out)
    assert delta_mean == 0.0482190464911681
    assert (
        main(
            [
                "--data",
                str(tmp_path / "official.json"),
                "--official",
                "--out",
                str(tmp_path / "o2"),
                "--delta-mean",
                "0.1",
                "--no-progress",
            ]
        )
        == 0
    )
    assert read_hardness_output(tmp_path / "o2")[1] == 0.1


def test_sigkill_then_rerun_matches_a_clean_run(tmp_path, clip_dir):
    # 100 shards: after the 4th is recorded the run cannot finish within one 20 ms poll, so the kill always lands
    data = write_parquet(tmp_path / "d.parquet", make_rows(200))
    common = ["--data", str(data), "--clip", str(clip_dir), "--workers", "0", "--no-progress", "--shard-size", "2"]
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dama.hardness.cli", *common, "--out", str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    give_up_at = time.time() + 60
    while time.time() < give_up_at and not (out / ".state" / "shard-00004.parquet.json").exists():
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed (crashed or too fast); nothing to resume"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "hardness.json").exists()
    assert main([*common, "--out", str(out)]) == 0
    assert main([*common, "--out", str(tmp_path / "clean")]) == 0
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "clean") for p in (tmp_path / "clean").rglob("*") if p.is_file())
    for rel in files:
        assert (out / rel).read_bytes() == (tmp_path / "clean" / rel).read_bytes(), rel
