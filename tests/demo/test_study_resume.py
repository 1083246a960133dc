"""`dama demo --study` killed mid-way and run again continues from its run store, through the real CLI; and what
`dama demo` prints on a real console.

The tiny study preset (`--preset tiny --study`: two regimes, the pilot rule, three methods, seconds per run) on the
quick preset's models; the default demo's shape (`--preset tiny`) builds them first.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from dama.cli import main as dama_main

# What the libraries under the demo print unless the demo silences them (docs/demo.md, "The console")
LIBRARY_NOISE = ("Loading weights", "Writing model shards", "Creating parquet", "Map:", "Warning", "warnings.warn")


def _command(out, cache) -> list[str]:
    return [
        sys.executable,
        "-m",
        "dama.cli",
        "demo",
        "--preset",
        "tiny",
        "--study",
        "--out",
        str(out),
        "--cache-dir",
        str(cache),
    ]


def console_env() -> dict[str, str]:
    """A person's console: no TQDM_DISABLE (tests/conftest.py sets it for the test process), unbuffered."""
    env = {k: v for k, v in os.environ.items() if k not in ("TQDM_DISABLE", "PYTHONWARNINGS")}
    return {**env, "PYTHONUNBUFFERED": "1"}


def assert_demo_console(done: subprocess.CompletedProcess) -> None:
    """Only the demo's own lines and its one bar: one line per stage, a bar over the runs with an ETA."""
    console = done.stdout + done.stderr
    for noise in LIBRARY_NOISE:
        assert noise not in console, (noise, console[-3000:])
    assert "[demo] models ready" in done.stdout and "[demo] base model (test)" in done.stdout
    assert re.search(r"\[demo\] runs \d+/\d+ \|", done.stderr) and "ETA" in done.stderr, done.stderr[-2000:]
    assert re.search(r"\[demo\] .+: \d+ runs \(\d+ from the store\) in [\d.]+ min", done.stdout), done.stdout


def stored_runs_reported(stdout: str) -> int:
    """Runs the stage lines say came from the store."""
    return sum(int(n) for n in re.findall(r": \d+ runs \((\d+) from the store\)", stdout))


def test_a_killed_study_resumes_from_its_store(tmp_path, quick_cache):
    out = tmp_path / "study"
    # build the models first (the default demo's shape, on a person's console), so that the killed run spends its
    # time on runs
    warm = subprocess.run([sys.executable, "-m", "dama.cli", "demo", "--preset", "tiny", "--out", str(tmp_path / "warm"),
                           "--cache-dir", str(quick_cache), "--workers", "2"], env=console_env(), capture_output=True,
                          text=True, timeout=900)  # fmt: skip
    assert warm.returncode == 0, warm.stderr[-3000:]
    assert_demo_console(warm)  # the workers' libraries are quiet too
    # a run's numbers do not depend on how many runs go side by side (dama.demo.pool): the same preset inline
    inline = tmp_path / "inline"
    assert dama_main(["demo", "--preset", "tiny", "--out", str(inline), "--cache-dir", str(quick_cache),
                      "--workers", "1"]) == 0  # fmt: skip
    two, one = (json.loads((folder / "results.json").read_text()) for folder in (tmp_path / "warm", inline))
    assert (two["workers"]["processes"], one["workers"]["processes"]) == (2, 1)
    assert two["store"]["runs_reused"] == one["store"]["runs_reused"] == 0
    assert two["frontier"] == one["frontier"] and two["matched_recall"] == one["matched_recall"]
    assert two["regimes"]["short"]["beta_h"] == one["regimes"]["short"]["beta_h"]
    env = console_env()
    proc = subprocess.Popen(_command(out, quick_cache), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    give_up_at = time.monotonic() + 600
    while time.monotonic() < give_up_at and len(list((out / "store").glob("*.json"))) < 4:
        assert proc.poll() is None, "the study ended before it could be killed"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stored = {p.name: json.loads(p.read_text()) for p in (out / "store").glob("*.json")}  # every file is whole
    assert len(stored) >= 4 and not (out / "results.json").exists()

    done = subprocess.run(_command(out, quick_cache), env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "results.json").read_text())
    assert summary["store"]["runs_reused"] >= len(stored)
    assert stored_runs_reported(done.stdout) == summary["store"]["runs_reused"]
    assert_demo_console(done)
    # a reused run is the stored one: the first pilot run's test numbers are those of its file
    first = summary["frontier"]["short"]["DPO"]
    files = [
        s["record"]
        for s in stored.values()
        if s["settings"]["method"] == "DPO" and s["settings"]["regime"]["name"] == "short"
    ]
    for record in files:
        entry = [e for e in first if e["lr"] == record["lr"] and e["seed"] == record["seed"]]
        if entry:
            assert entry[0]["CHAIR_i"] == record["test"]["CHAIR_i"] and entry[0]["recall"] == record["test"]["recall"]
    # the study covered both regimes, with the grid fixed by DPO's pilot in each
    assert set(summary["frontier"]) == {"short", "official"}
    for name in ("short", "official"):
        regime = summary["regimes"][name]
        assert regime["knee"] in regime["grid"] and len(regime["pilot"]) == 3
        assert all(e["val_epochs"] for e in summary["frontier"]["official"]["DPO"])

    # run again: nothing left to train
    again = subprocess.run(_command(out, quick_cache), env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0
    summary = json.loads((out / "results.json").read_text())
    assert summary["store"]["runs_reused"] == summary["store"]["runs"]


def test_study_and_quick_cannot_be_combined(tmp_path, capsys):
    assert dama_main(["demo", "--study", "--quick", "--out", str(tmp_path / "x")]) == 2
    assert "--study and --quick cannot be combined" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--study", "--seeds", "0"], "--seeds: must be ≥ 1, got 0"),
        (["--study", "--seeds", "two"], "--seeds: expected a whole number ≥ 1, got 'two'"),
        (["--study", "--out", "FILE"], "--out 'FILE' cannot be written"),
        (["--study", "--out", "FILE/study"], "--out 'FILE/study' cannot be written"),
        (["--study", "--cache-dir", "FILE/cache"], "--cache-dir 'FILE/cache' cannot be written"),
        (["--study", "--quick"], "--study and --quick cannot be combined"),
        (["--quick", "--preset", "tiny"], "--quick and --preset tiny cannot be combined"),
        (["--study", "--preset", "tiny", "--seeds", "3"], "--seeds does not apply to --preset tiny"),
    ],
)
def test_the_study_refuses_bad_options_before_any_work(tmp_path, capsys, argv, fragment):
    """Through the real CLI: exit 2, one line naming the option, and nothing written (no --out folder, no cache)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    argv = [a.replace("FILE", str(blocker)) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "study")]
    if "--cache-dir" not in argv:
        argv += ["--cache-dir", str(tmp_path / "cache")]
    assert dama_main(["demo", *argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "dama demo: error: " in err, err
    assert fragment.replace("FILE", str(blocker)) in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"] and blocker.read_text() == "x"
