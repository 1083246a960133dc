"""The resumable pipeline: layout, δ̄, formats, byte-identical resume, bad inputs, official import."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hardness_rows import make_rows, png_bytes, write_parquet

from dama.delta import OFFICIAL_DELTA_MEAN
from dama.hardness import IncompleteOutputError, read_hardness_output
from dama.hardness.compute import compute_hardness, import_official
from dama.hardness.pipeline import OutputConflictError
from dama.hardness.shard import HardnessDataError

NEW = ["chosen_subsentences", "rejected_subsentences", "chosen_clip_probs", "rejected_clip_probs", "dama_delta"]
OUTPUT_FILES = ["hardness.json", "summary.md", "delta_hist.png", "skipped.jsonl"]


def run(data, out, scorer, splitter, **kw):
    kw.setdefault("shard_size", 5)
    kw.setdefault("progress", False)
    return compute_hardness(data, out, scorer, splitter, **kw)


def snapshot(out: Path) -> dict[str, bytes]:
    """Every file of the output, by relative path (hidden state included, to catch leftovers)."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_output_layout_and_delta_mean(pairs_parquet, tmp_path, scorer, splitter):
    out = tmp_path / "out"
    meta = run(pairs_parquet, out, scorer, splitter)
    files = snapshot(out)
    assert sorted(files) == sorted([*OUTPUT_FILES, *(f"data/shard-0000{k}.parquet" for k in range(5))])
    data, delta_mean = read_hardness_output(out)
    assert data.num_rows == meta["n_rows"] == meta["n_input_rows"] == 23 and meta["n_skipped"] == 0
    assert data.column_names == ["idx", "question", "chosen", "rejected", "image", *NEW]
    assert data["idx"] == list(range(23))
    deltas = data["dama_delta"]
    assert delta_mean == pytest.approx(math.fsum(deltas) / 23, abs=1e-15) and meta["delta_mean_source"] == "computed"
    assert all(-1 <= d <= 1 for d in deltas)
    row = data[3]
    assert row["chosen_subsentences"] == ["A red cat sits on a table.", "There are 3 dogs in the park."]
    total = sum(row["chosen_clip_probs"]) + sum(row["rejected_clip_probs"])
    assert total == pytest.approx(1.0) and row["dama_delta"] == pytest.approx(
        sum(row["chosen_clip_probs"]) - sum(row["rejected_clip_probs"])
    )
    # rows sharing an image (every 4th) got the same image embedding: identical texts → identical scores
    assert data[0]["chosen_clip_probs"] != data[5]["chosen_clip_probs"]
    assert meta["truncation"]["n_texts"] == 23 * 4 and meta["truncation"]["chosen"] == 0
    assert meta["clip_model"] and meta["scorer"] == "union_softmax" and meta["splitter"]["name"] == "sentence"
    summary = (out / "summary.md").read_text()
    assert "rows read: 23, written: 23, skipped: 0" in summary and "delta_hist.png" in summary
    assert (out / "delta_hist.png").read_bytes()[:4] == b"\x89PNG"
    # same command again: nothing to do, nothing changes
    before = snapshot(out)
    run(pairs_parquet, out, scorer, splitter)
    assert snapshot(out) == before


def test_mean_cosine_and_override(pairs_parquet, tmp_path, scorer, splitter):
    meta = run(pairs_parquet, tmp_path / "o", scorer, splitter, scoring="mean_cosine", delta_mean=0.25)
    data, delta_mean = read_hardness_output(tmp_path / "o", as_dataset=False)
    assert isinstance(data, pa.Table) and delta_mean == 0.25 and meta["delta_mean_source"] == "override"
    assert meta["delta_mean_computed"] == pytest.approx(sum(data["dama_delta"].to_pylist()) / 23)


class Interrupt(Exception):
    pass


def test_resume_after_interruption_is_byte_identical(pairs_parquet, tmp_path, scorer, splitter):
    clean = tmp_path / "clean"
    run(pairs_parquet, clean, scorer, splitter)

    out = tmp_path / "resumed"

    def stop_after_shard_1(index):
        if index == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        run(pairs_parquet, out, scorer, splitter, after_shard=stop_after_shard_1)
    assert not (out / "hardness.json").exists()
    with pytest.raises(IncompleteOutputError, match="run the same `dama hardness` command again"):
        read_hardness_output(out)
    # a kill between the shard's parquet and its state, and a temporary left by a kill mid-write
    (out / "data" / "shard-00002.parquet").write_bytes(b"half a parquet")
    (out / "data" / ".shard-00003.parquet.tmp-999").write_bytes(b"junk")
    processed = []

    class Spy:
        def __init__(self, inner):
            self.inner = inner

        def split(self, requests):
            processed.append(requests[0].response)
            return self.inner.split(requests)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    run(pairs_parquet, out, scorer, Spy(splitter))
    assert len(processed) == 3  # shards 2, 3, 4 only: 0 and 1 were done
    assert snapshot(out) == snapshot(clean)


def test_resume_after_failure_inside_a_shard(pairs_parquet, tmp_path, scorer, splitter):
    clean = tmp_path / "clean"
    run(pairs_parquet, clean, scorer, splitter)
    out = tmp_path / "resumed"
    calls = []

    class Crashing:
        name, columns = splitter.name, splitter.columns

        def describe(self):
            return splitter.describe()

        def split(self, requests):
            calls.append(1)
            if len(calls) == 4:
                raise RuntimeError("simulated crash while processing shard 3")
            return splitter.split(requests)

    with pytest.raises(RuntimeError, match="simulated"):
        run(pairs_parquet, out, scorer, Crashing())
    run(pairs_parquet, out, scorer, splitter)
    assert snapshot(out) == snapshot(clean)


def test_other_settings_refuse_to_resume(pairs_parquet, tmp_path, scorer, splitter):
    out = tmp_path / "o"
    with pytest.raises(Interrupt):
        run(pairs_parquet, out, scorer, splitter, after_shard=lambda i: (_ for _ in ()).throw(Interrupt()))
    with pytest.raises(OutputConflictError, match="scorer"):
        run(pairs_parquet, out, scorer, splitter, scoring="mean_cosine")
    meta = run(pairs_parquet, out, scorer, splitter, scoring="mean_cosine", overwrite=True)
    assert meta["scorer"] == "mean_cosine"


def test_input_formats_agree(tmp_path, scorer, splitter):
    """parquet, JSONL, JSON list and a datasets folder, with image paths and conversational fields."""
    import datasets

    images = tmp_path / "images"
    images.mkdir()
    rows = []
    for i, row in enumerate(make_rows(7)):
        name = f"img{i}.png"
        (images / name).write_bytes(row["image"]["bytes"])
        rows.append(
            {
                "id": f"p{i}",
                "prompt": [
                    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": row["question"]}]}
                ],
                "chosen": [{"role": "assistant", "content": [{"type": "text", "text": row["chosen"]}]}],
                "rejected": row["rejected"],
                "image_path": name,
            }
        )
    write_parquet(tmp_path / "d.parquet", rows)
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "d.json").write_text(json.dumps(rows, indent=1))
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "d_hf"))
    results = {}
    for name in ("d.parquet", "d.jsonl", "d.json", "d_hf"):
        meta = run(tmp_path / name, tmp_path / f"out-{name}", scorer, splitter, shard_size=3, image_root=images)
        data, _ = read_hardness_output(tmp_path / f"out-{name}", as_dataset=False)
        results[name] = (data.column("dama_delta").to_pylist(), data.column("id").to_pylist(), meta["delta_mean"])
    assert results["d.parquet"][1] == [f"p{i}" for i in range(7)]
    assert len({json.dumps(r) for r in results.values()}) == 1


def test_json_list_streams_in_small_chunks(tmp_path):
    from dama.hardness.reader import _iter_json_list

    records = [{"a": i, "text": "x, ] [ } {" * (i % 3), "nested": {"b": [i, "]"]}} for i in range(50)]
    (tmp_path / "l.json").write_text(json.dumps(records))
    assert list(_iter_json_list(tmp_path / "l.json", chunk_chars=7)) == records


def test_truncated_texts_are_counted(tmp_path, scorer, splitter):
    rows = make_rows(3)
    rows[1]["rejected"] = "A very long sentence " + "about a small red cat and a dog " * 12 + "in the park."
    meta = run(write_parquet(tmp_path / "d.parquet", rows), tmp_path / "o", scorer, splitter)
    assert meta["truncation"]["rejected"] == 1 and meta["truncation"]["rows"] == 1
    assert meta["truncation"]["max_tokens"] == 32
    assert "truncated at 32 tokens: 0 chosen, 1 rejected" in (tmp_path / "o" / "summary.md").read_text()


def bad_rows(tmp_path: Path) -> tuple[list[dict], dict[int, tuple[str, str]]]:
    """Rows 2..6 are bad, each a different way; the expected (field, words in the reason) per row id."""
    rows = make_rows(9)
    (tmp_path / "ok.png").write_bytes(png_bytes((5, 5, 5)))
    for r in rows:
        r["image_path"] = None
    rows[2]["image"] = {"bytes": b"not an image at all", "path": None}
    rows[3]["image"] = None
    rows[3]["image_path"] = "missing/nowhere.png"
    rows[4]["chosen"] = "   "
    rows[5]["rejected"] = "1.\n2.\n..."
    rows[6]["image"] = None
    rows[6]["image_path"] = "../../etc/passwd"
    expected = {
        2: ("image", "not a readable image"),
        3: ("image_path", "not found"),
        4: ("chosen", "empty"),
        5: ("rejected", "no sentence"),
        6: ("image_path", "escapes"),
    }
    return rows, expected


@pytest.mark.parametrize("bad", [2, 3, 4, 5, 6])
def test_bad_input_fail_names_row_and_field(tmp_path, scorer, splitter, bad):
    rows, expected = bad_rows(tmp_path)
    keep = [r for r in rows if r["idx"] not in expected or r["idx"] == bad]
    data = write_parquet(tmp_path / "d.parquet", keep)
    with pytest.raises(Exception) as info:
        run(data, tmp_path / "o", scorer, splitter, image_root=tmp_path, on_error="fail")
    field, words = expected[bad]
    message = str(info.value)
    assert isinstance(info.value, HardnessDataError)
    assert f"row {bad} field {field!r}" in message and words in message and str(data) in message
    if bad == 3:
        assert "nowhere.png" in message
    assert not (tmp_path / "o" / "hardness.json").exists()


def test_bad_input_skip_lists_rows_and_stays_consistent(tmp_path, scorer, splitter):
    rows, expected = bad_rows(tmp_path)
    data = write_parquet(tmp_path / "d.parquet", rows)
    meta = run(data, tmp_path / "o", scorer, splitter, image_root=tmp_path, on_error="skip", shard_size=4)
    out, _ = read_hardness_output(tmp_path / "o")
    assert out["idx"] == [0, 1, 7, 8]
    assert meta["n_rows"] == 4 and meta["n_skipped"] == 5 and meta["n_input_rows"] == 9
    skipped = [json.loads(line) for line in (tmp_path / "o" / "skipped.jsonl").read_text().splitlines()]
    assert [s["row_id"] for s in skipped] == [2, 3, 4, 5, 6]
    for s in skipped:
        field, words = expected[s["row_id"]]
        assert s["field"] == field and words in s["reason"]
    summary = (tmp_path / "o" / "summary.md").read_text()
    assert "Skipped rows (5" in summary and "no sentence" in summary
    # shard 1 (rows 4..7) kept one row; shard 0 kept two; every shard file exists and is readable
    assert [pq.read_metadata(tmp_path / "o" / "data" / f).num_rows for f in meta["shards"]] == [2, 1, 1]


def test_workers_give_identical_output(pairs_parquet, tmp_path, scorer, splitter):
    run(pairs_parquet, tmp_path / "w0", scorer, splitter, workers=0, image_batch_size=4)
    run(pairs_parquet, tmp_path / "w1", scorer, splitter, workers=1, image_batch_size=4)
    assert snapshot(tmp_path / "w0") == snapshot(tmp_path / "w1")


def test_import_official(tmp_path):
    records = [
        {
            "question": "q",
            "chosen": "c",
            "rejected": "r",
            "image_path": "a.jpg",
            "chosen_logits": [0.5, 0.25],
            "rejected_logits": [0.125],
            "logps": [-1.0, -2.0],
        },
        {
            "question": "q",
            "chosen": "c",
            "rejected": "r",
            "image_path": "b.jpg",
            "chosen_logits": [0.1],
            "rejected_logits": [0.2, 0.3],
            "logps": [-1.5, -2.5],
        },
    ]
    (tmp_path / "official.json").write_text(json.dumps(records))
    meta = import_official(tmp_path / "official.json", tmp_path / "o", progress=False)
    data, delta_mean = read_hardness_output(tmp_path / "o")
    assert data["dama_delta"] == pytest.approx([0.625, -0.4])
    assert delta_mean == OFFICIAL_DELTA_MEAN and meta["delta_mean_source"] == "official"
    assert meta["delta_mean_computed"] == pytest.approx(0.1125)
    assert data["logps"] == [[-1.0, -2.0], [-1.5, -2.5]] and data["chosen_clip_probs"][0] == [0.5, 0.25]
    meta = import_official(tmp_path / "official.json", tmp_path / "o2", delta_mean="computed", progress=False)
    assert meta["delta_mean"] == pytest.approx(0.1125)
    records[1]["rejected_logits"] = None  # `[]` is valid: the official `sum([])` is 0
    (tmp_path / "bad.json").write_text(json.dumps(records))
    with pytest.raises(HardnessDataError, match="row 1: field 'rejected_logits' is null"):
        import_official(tmp_path / "bad.json", tmp_path / "o3", progress=False)


def test_reading_parquet_does_not_accumulate_memory(tmp_path):
    """Streaming: Arrow memory after many shards stays at a few shards' worth (pre-buffering kept them all)."""
    import os

    from dama.hardness.reader import open_input

    path = tmp_path / "big.parquet"
    with pq.ParquetWriter(path, pa.schema([("idx", pa.int64()), ("blob", pa.binary())])) as writer:
        for group in range(24):
            writer.write_table(
                pa.table(
                    {
                        "idx": list(range(group * 200, group * 200 + 200)),
                        "blob": [os.urandom(10_000) for _ in range(200)],
                    }
                )
            )
    peaks = []
    for table in open_input(path).iter_tables(240):
        assert table.num_rows == 240
        peaks.append(pa.total_allocated_bytes())
    assert len(peaks) == 24 * 200 // 240
    half = len(peaks) // 2
    assert max(peaks[half:]) <= 1.1 * max(peaks[:half])  # bounded by a read batch and a shard, not the file
