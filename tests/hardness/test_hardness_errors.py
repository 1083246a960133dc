"""`dama hardness` user errors through the real CLI: exit 2, one message, the files left behind."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hardness_rows import make_rows, write_parquet

from dama.cli import main as dama
from dama.hardness import read_hardness_output


def official_rows(n: int = 4) -> list[dict]:
    return [
        {
            "id": f"r{i}",
            "question": "q",
            "chosen": f"a cat {i}",
            "rejected": f"a dog {i}",
            "image_path": "a.jpg",
            "chosen_logits": [0.5, 0.25],
            "rejected_logits": [0.125],
            "logps": [0.0],
        }
        for i in range(n)
    ]


def write_json(path: Path, rows: list[dict]) -> Path:
    path.write_text(json.dumps(rows))  # Python's json writes NaN / Infinity literals, as the official dump can
    return path


def user_error(capsys, *fragments: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and re.search(r"dama hardness: error: ", err), err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


def compute_hardness(data: Path, clip_dir: Path, out: Path) -> int:
    """`dama hardness` computing δ with the test CLIP, in-process (no decoder workers), into `out`."""
    return dama(
        [
            "hardness",
            "--data",
            str(data),
            "--clip",
            str(clip_dir),
            "--workers",
            "0",
            "--no-progress",
            "--out",
            str(out),
        ]
    )


@pytest.mark.parametrize("value", ["nan", "inf", "-Infinity", "abc"])
def test_non_finite_or_non_numeric_delta_mean_flag_is_refused(tmp_path, capsys, value):
    data = write_json(tmp_path / "official.json", official_rows())
    out = tmp_path / "o"
    assert dama(["hardness", "--data", str(data), "--official", "--out", str(out), f"--delta-mean={value}"]) == 2
    user_error(capsys, "--delta-mean", "finite number", repr(value))
    assert not out.exists()


@pytest.mark.parametrize("flag", ["--shard-size", "--text-batch-size", "--image-batch-size"])
def test_zero_sizes_are_refused(tmp_path, capsys, flag):
    data = write_json(tmp_path / "official.json", official_rows())
    assert dama(["hardness", "--data", str(data), "--official", "--out", str(tmp_path / "o"), flag, "0"]) == 2
    user_error(capsys, flag, "must be ≥ 1")


def test_official_import_refuses_a_nan_score_naming_row_and_field(tmp_path, capsys):
    rows = official_rows()
    rows[2]["rejected_logits"] = [float("nan")]
    data = write_json(tmp_path / "official.json", rows)
    out = tmp_path / "o"
    assert dama(["hardness", "--data", str(data), "--official", "--out", str(out), "--no-progress"]) == 2
    err = user_error(
        capsys, f"{data} row r2: field 'rejected_logits': item 0 is nan, not a finite number", "--on-error skip"
    )
    assert "dama_delta" not in err  # a column the user never wrote
    assert not (out / "hardness.json").exists()
    # skip mode: the row is left out and reported; δ̄ and every stored δ are finite
    assert (
        dama(
            [
                "hardness",
                "--data",
                str(data),
                "--official",
                "--out",
                str(out),
                "--no-progress",
                "--on-error",
                "skip",
                "--delta-mean",
                "computed",
                "--overwrite",
            ]
        )
        == 0
    )
    data_out, delta_mean = read_hardness_output(out)
    assert data_out["id"] == ["r0", "r1", "r3"]
    # δ = Σ chosen − Σ rejected = 0.5 + 0.25 − 0.125 for every kept row (exact in binary)
    assert data_out["dama_delta"] == [0.625] * 3 and delta_mean == 0.625
    skipped = [json.loads(line) for line in (out / "skipped.jsonl").read_text().splitlines()]
    assert [(r["row_id"], r["field"]) for r in skipped] == [("r2", "rejected_logits")]


def test_identical_pair_is_a_bad_row_in_the_official_import(tmp_path, capsys):
    rows = official_rows()
    rows[1]["rejected"] = rows[1]["chosen"]
    data = write_json(tmp_path / "official.json", rows)
    out = tmp_path / "o"
    assert dama(["hardness", "--data", str(data), "--official", "--out", str(out), "--no-progress"]) == 2
    user_error(capsys, "row r1 field 'rejected'", "identical to 'chosen'")
    assert (
        dama(
            [
                "hardness",
                "--data",
                str(data),
                "--official",
                "--out",
                str(out),
                "--no-progress",
                "--on-error",
                "skip",
                "--overwrite",
            ]
        )
        == 0
    )
    assert read_hardness_output(out)[0]["id"] == ["r0", "r2", "r3"]
    assert "identical" in (out / "skipped.jsonl").read_text()


def test_identical_pair_is_a_bad_row_when_computing(tmp_path, capsys, clip_dir):
    rows = make_rows(5)
    rows[3]["rejected"] = rows[3]["chosen"]
    data = write_parquet(tmp_path / "d.parquet", rows)
    argv = ["hardness", "--data", str(data), "--clip", str(clip_dir), "--workers", "0", "--no-progress"]
    assert dama([*argv, "--out", str(tmp_path / "fail")]) == 2
    user_error(capsys, "row 3 field 'rejected'", "identical to 'chosen'")
    assert not (tmp_path / "fail" / "hardness.json").exists()
    assert dama([*argv, "--out", str(tmp_path / "skip"), "--on-error", "skip"]) == 0
    data_out, delta_mean = read_hardness_output(tmp_path / "skip")
    assert data_out["idx"] == [0, 1, 2, 4] and math.isfinite(delta_mean)


def test_rerun_after_fixing_the_input_is_accepted(tmp_path, capsys):
    rows = official_rows()
    rows[1]["chosen_logits"] = None  # null: refused (an empty list is valid, it sums to 0)
    data = write_json(tmp_path / "official.json", rows)
    argv = ["hardness", "--data", str(data), "--official", "--out", str(tmp_path / "o"), "--no-progress"]
    assert dama(argv) == 2
    assert "fix the data" in capsys.readouterr().err
    rows[1]["chosen_logits"] = [0.75]
    write_json(data, rows)  # the input changed: the failed run wrote no shard, so the same command just starts again
    assert dama(argv) == 0
    assert read_hardness_output(tmp_path / "o")[0]["id"] == ["r0", "r1", "r2", "r3"]


def test_rerun_after_fixing_input_with_finished_shards_says_overwrite(tmp_path, capsys):
    rows = official_rows()
    rows[3]["chosen_logits"] = None  # null: refused (an empty list is valid, it sums to 0)
    data = write_json(tmp_path / "official.json", rows)
    argv = [
        "hardness",
        "--data",
        str(data),
        "--official",
        "--out",
        str(tmp_path / "o"),
        "--no-progress",
        "--shard-size",
        "2",
    ]
    assert dama(argv) == 2  # shard 0 (rows 0-1) was written, shard 1 failed
    capsys.readouterr()
    rows[3]["chosen_logits"] = [0.75]
    write_json(data, rows)
    assert dama(argv) == 2
    user_error(capsys, "the input changed", "--overwrite")
    assert dama([*argv, "--overwrite"]) == 0


def test_damaged_hardness_json_names_the_file_and_the_way_out(tmp_path, capsys):
    data = write_json(tmp_path / "official.json", official_rows())
    out = tmp_path / "o"
    argv = ["hardness", "--data", str(data), "--official", "--out", str(out), "--no-progress"]
    assert dama(argv) == 0
    meta = out / "hardness.json"
    meta.write_bytes(meta.read_bytes()[:40])  # truncated (a full disk, a copy cut short)
    capsys.readouterr()
    assert dama(argv) == 2
    user_error(capsys, str(meta), "damaged", "--overwrite")
    run = tmp_path / "run"
    assert (
        dama(
            [
                "train",
                "--config",
                str(Path(__file__).parents[2] / "recipes/tiny/dama.yaml"),
                "--dataset_path",
                str(out),
                "--output_dir",
                str(run),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "Traceback" not in err and str(meta) in err and "--overwrite" in err
    assert dama([*argv, "--overwrite"]) == 0
    assert read_hardness_output(out)[1] == pytest.approx(0.0482190464911681)


def test_damaged_state_file_is_recomputed(tmp_path, capsys):
    data = write_json(tmp_path / "official.json", official_rows())
    out = tmp_path / "o"
    argv = ["hardness", "--data", str(data), "--official", "--out", str(out), "--no-progress", "--shard-size", "2"]
    stop = {}

    # a run that stopped after shard 0, with shard 0's state file then cut short
    from dama.hardness.compute import import_official

    class Stop(Exception):
        pass

    def after_shard(index: int) -> None:
        stop["index"] = index
        raise Stop

    with pytest.raises(Stop):
        import_official(data, out, shard_size=2, progress=False, after_shard=after_shard)
    state = out / ".state" / "shard-00000.parquet.json"
    state.write_text(state.read_text()[:10])
    assert dama(argv) == 0
    assert "damaged" in capsys.readouterr().err
    table = pq.read_table(out / "data" / "shard-00000.parquet")
    assert table.column("id").to_pylist() == ["r0", "r1"]
    assert read_hardness_output(out)[0]["id"] == ["r0", "r1", "r2", "r3"]


def test_unwritable_out_is_refused_before_any_work(tmp_path, capsys):
    data = write_json(tmp_path / "official.json", official_rows())
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert dama(["hardness", "--data", str(data), "--official", "--out", str(blocker / "o")]) == 2
    user_error(capsys, "--out", "cannot be written")


def test_a_number_where_text_is_expected_names_row_and_field(tmp_path, capsys):
    rows = official_rows()
    rows[2]["chosen"] = 7
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert dama(["hardness", "--data", str(data), "--official", "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    user_error(capsys, f"{data} row 2: field 'chosen' is number 7, but str in row 0")


def test_a_byte_order_mark_before_a_json_list_is_accepted(tmp_path):
    data = tmp_path / "official.json"
    data.write_text("\ufeff" + json.dumps(official_rows()), encoding="utf-8")
    assert dama(["hardness", "--data", str(data), "--official", "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    assert len(read_hardness_output(tmp_path / "o")[0]) == 4


def test_a_non_utf8_byte_in_a_json_list_names_file_and_line(tmp_path, capsys):
    text = json.dumps(official_rows(), indent=1).encode("utf-8")
    lines = text.splitlines(keepends=True)
    index = next(i for i, line in enumerate(lines) if b"a dog 2" in line)
    lines[index] = lines[index].replace(b"a dog 2", b"a d\xe9og 2")  # Latin-1 é
    data = tmp_path / "official.json"
    data.write_bytes(b"".join(lines))
    assert dama(["hardness", "--data", str(data), "--official", "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    user_error(capsys, f"{data}:{index + 1}: not UTF-8 text")


def test_an_unreadable_image_is_reported_with_its_location_once(tmp_path, capsys, clip_dir):
    rows = make_rows(4)
    rows[2]["image"] = {"bytes": b"not an image at all", "path": None}
    data = write_parquet(tmp_path / "d.parquet", rows)
    assert compute_hardness(data, clip_dir, tmp_path / "o") == 2
    err = user_error(capsys, f"{data} row 2 field 'image'", "not a readable image")
    assert err.count("row 2 field 'image'") == 1, err


def test_a_number_as_the_image_is_named_as_such(tmp_path, capsys, clip_dir):
    rows = [{**row, "image": 5} for row in make_rows(3)]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({k: v for k, v in row.items()}) + "\n" for row in rows))
    assert compute_hardness(data, clip_dir, tmp_path / "o") == 2
    user_error(capsys, f"{data} row 0 field 'image'", "expected an image", "got int 5")


def test_a_damaged_parquet_input_is_a_user_error(tmp_path, capsys):
    data = tmp_path / "pairs.parquet"
    data.write_bytes(b"PAR1 cut short")
    assert dama(["hardness", "--data", str(data), "--official", "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    user_error(capsys, f"{data}: cannot be read")


def test_library_entry_points_refuse_a_non_finite_delta_mean(tmp_path):
    from dama.errors import NonFiniteError
    from dama.hardness.compute import import_official

    data = write_json(tmp_path / "official.json", official_rows())
    with pytest.raises(NonFiniteError, match="δ̄ override"):
        import_official(data, tmp_path / "o", delta_mean=float("inf"), progress=False)
    assert not (tmp_path / "o" / "hardness.json").exists()


def assert_one_line(err: str) -> None:
    """The error is one line, the last one (progress bars of model loading may precede it)."""
    message = err[err.index("dama hardness: error: ") :]
    assert "\n" not in message.rstrip("\n"), err


def shard_files(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "data").glob("*.parquet")) if (out / "data").is_dir() else []


@pytest.mark.parametrize("content", ["", "\n\n"])
def test_an_empty_input_file_names_the_file(tmp_path, capsys, clip_dir, content):
    data = tmp_path / "pairs.jsonl"
    data.write_text(content)
    out = tmp_path / "o"
    assert compute_hardness(data, clip_dir, out) == 2
    err = user_error(capsys, f"{data}: the input holds no rows")
    assert_one_line(err)
    assert not (out / "hardness.json").exists() and shard_files(out) == []


def test_an_empty_official_list_names_the_file(tmp_path, capsys):
    data = write_json(tmp_path / "official.json", [])
    out = tmp_path / "o"
    argv = ["hardness", "--data", str(data), "--official", "--out", str(out), "--no-progress"]
    assert dama(argv) == 2  # the official δ̄ is a constant, but an output of no pair trains nothing
    user_error(capsys, f"{data}: the input holds no rows")
    assert not (out / "hardness.json").exists()


def test_every_row_skipped_says_so_and_where_the_list_is(tmp_path, capsys, clip_dir):
    rows = make_rows(3)
    for row in rows:
        row["image"] = {"bytes": b"not an image", "path": None}
    data = write_parquet(tmp_path / "d.parquet", rows)
    out = tmp_path / "o"
    argv = ["hardness", "--data", str(data), "--clip", str(clip_dir), "--workers", "0", "--no-progress",
            "--out", str(out), "--on-error", "skip"]  # fmt: skip
    assert dama(argv) == 2
    err = user_error(capsys, str(data), "every one of its 3 row(s) was skipped", str(out / "skipped.jsonl"))
    assert_one_line(err)
    skipped = [json.loads(line) for line in (out / "skipped.jsonl").read_text().splitlines()]
    assert [(r["row_id"], r["field"]) for r in skipped] == [(0, "image"), (1, "image"), (2, "image")]
    assert not (out / "hardness.json").exists()
    # the same command again says the same; with the rows fixed and --overwrite it completes
    assert dama(argv) == 2
    user_error(capsys, "every one of its 3 row(s) was skipped")
    write_parquet(data, make_rows(3))
    assert dama([*argv, "--overwrite"]) == 0
    assert read_hardness_output(out)[0]["idx"] == [0, 1, 2]
    assert (out / "skipped.jsonl").read_text() == ""


def test_every_official_row_skipped_even_with_a_delta_mean(tmp_path, capsys):
    rows = official_rows(2)
    for row in rows:
        row["chosen_logits"] = None
    data = write_json(tmp_path / "official.json", rows)
    out = tmp_path / "o"
    argv = ["hardness", "--data", str(data), "--official", "--out", str(out), "--no-progress", "--on-error", "skip"]
    assert dama(argv) == 2  # the official δ̄ is given, yet no pair is left
    user_error(capsys, "every one of its 2 row(s) was skipped", "chosen_logits", str(out / "skipped.jsonl"))
    assert len((out / "skipped.jsonl").read_text().splitlines()) == 2
    assert not (out / "hardness.json").exists()


def test_a_clip_model_that_cannot_be_found_says_how_to_point_at_a_folder(tmp_path, capsys, no_hub):
    data = write_parquet(tmp_path / "d.parquet", make_rows(2))
    out = tmp_path / "o"
    argv = ["hardness", "--data", str(data), "--clip", "no-such-org/no-such-clip", "--out", str(out), "--no-progress"]
    assert dama(argv) == 2
    err = user_error(capsys, "--clip 'no-such-org/no-such-clip' cannot be found", "not a local folder",
                     "hub", "Point --clip at a local folder")  # fmt: skip
    assert_one_line(err)
    assert not out.exists()  # the model is loaded before anything is written
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    assert dama([*argv[:4], str(folder), *argv[5:]]) == 2
    user_error(capsys, f"--clip {str(folder)!r}: the folder cannot be loaded as a model", "config.json")


@pytest.mark.parametrize(
    ("logits", "fragment"),
    [
        ([0.5, "abc"], "row 2: field 'chosen_logits' item 1 is str 'abc', but number in row 0"),
        (["abc"], "row 2: field 'chosen_logits' item 0 is str 'abc', but number in row 0"),
        ("abc", "row 2: field 'chosen_logits' is str 'abc', but list in row 0"),
    ],
)
def test_official_chosen_logits_with_text_names_the_row_and_field(tmp_path, capsys, logits, fragment):
    rows = official_rows()
    rows[2]["chosen_logits"] = logits
    data = write_json(tmp_path / "official.json", rows)
    out = tmp_path / "o"
    assert dama(["hardness", "--data", str(data), "--official", "--out", str(out), "--no-progress"]) == 2
    err = user_error(capsys, f"{data} {fragment}")
    assert "cannot form a table" not in err
    assert not (out / "hardness.json").exists() and shard_files(out) == []


def test_an_llm_splitter_endpoint_that_cannot_answer_exits_4(tmp_path, capsys):
    import socket

    with socket.socket() as sock:  # a loopback port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    data = write_parquet(tmp_path / "d.parquet", make_rows(2))
    out = tmp_path / "o"
    argv = ["hardness", "--data", str(data), "--clip", "tiny:clip", "--workers", "0", "--no-progress", "--out",
            str(out), "--splitter", "llm", "--llm-model", "m", "--llm-endpoint", f"http://127.0.0.1:{port}/v1",
            "--llm-retries", "0"]  # fmt: skip
    assert dama(argv) == 4  # the input is fine: rerun when the endpoint is up (docs/errors.md)
    user_error(capsys, f"http://127.0.0.1:{port}/v1/chat/completions failed", "cannot reach the endpoint")
    assert not (out / "hardness.json").exists()
