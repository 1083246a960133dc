"""The resumable hardness run: stream shards, process each once, write it atomically, finalise last.

Shard k holds input rows [k·n, (k+1)·n). A shard is done when both `data/shard-k.parquet` and
`.state/shard-k.json` exist (the state is written after the parquet, both by rename), so after a kill the same
command skips the done shards, recomputes the one in flight and goes on; `hardness.json` (complete: true) is written
only after every shard, the skipped-row list, the summary and the histogram. A run refuses to continue an output
made with different settings (`.state/run.json` holds them) unless told to `overwrite`.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from dama._version import __version__
from dama.delta import HARDNESS_COLUMN, mean_delta, resolve_delta_mean
from dama.errors import DamaError, require_finite
from dama.hardness.output import (
    FORMAT,
    METADATA_FILE,
    DamagedOutputError,
    atomic_write_json,
    atomic_write_table,
    delta_histogram,
    delta_stats,
    read_output_json,
    shard_name,
    with_hardness_columns,
    write_summary,
)
from dama.hardness.reader import InputSource, count_rows
from dama.hardness.shard import HardnessDataError, RowProblem, ShardResult, row_ids
from dama.io import atomic_write_bytes, cleanup_temporaries
from dama.row_fields import response_text

STATE_DIR = ".state"


class OutputConflictError(DamaError, RuntimeError):
    """`--out` holds output of a different run (other settings or input)."""


class ShardProcessor(Protocol):
    def process(self, table: pa.Table, first_row: int) -> ShardResult: ...

    def describe(self) -> dict[str, Any]: ...


def _input_fingerprint(source: InputSource) -> dict[str, Any]:
    path = source.path.resolve()
    files = sorted(path.rglob("*")) if path.is_dir() else [path]
    stats = [
        (str(f.relative_to(path)) if path.is_dir() else f.name, f.stat().st_size, f.stat().st_mtime_ns)
        for f in files
        if f.is_file()
    ]
    return {"path": str(path), "kind": source.kind, "split": source.split, "files": stats}


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} → {"a.b": 1}, so a conflict message names the setting that changed."""
    if not isinstance(obj, dict):
        return {prefix: obj}
    out: dict[str, Any] = {}
    for key, value in obj.items():
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _prepare(out: Path, run: dict[str, Any], overwrite: bool) -> bool:
    """Make `out` ready; True when it already holds this run's complete output (nothing to do)."""
    state = out / STATE_DIR
    meta_path = out / METADATA_FILE
    if overwrite:
        meta_path.unlink(missing_ok=True)  # first: the output stops claiming to be complete
        for name in ("data", STATE_DIR):
            shutil.rmtree(out / name, ignore_errors=True)
        for name in ("summary.md", "delta_hist.png", "skipped.jsonl"):
            (out / name).unlink(missing_ok=True)
    if meta_path.is_file():
        meta = read_output_json(meta_path)
        if isinstance(meta, dict) and meta.get("run") == run and meta.get("complete") is True:
            return True
        raise OutputConflictError(
            f"{out} already holds a complete hardness output made with other settings or input; "
            "choose another --out or pass --overwrite"
        )
    if (state / "run.json").is_file():
        previous = read_output_json(state / "run.json", "pass --overwrite to start the run again")
        done = list(state.glob("shard-*.json"))
        if previous != run and done:
            now, before = _flatten(run), _flatten(previous)
            changed = sorted(k for k in set(now) | set(before) if now.get(k) != before.get(k))
            why = "the input changed" if all(k.startswith("input.") for k in changed) else "different settings"
            raise OutputConflictError(
                f"{out} holds an unfinished run made with {why} ({', '.join(changed)} changed) that already wrote "
                f"{len(done)} shard(s); pass --overwrite to start again (or rerun with the old input and options to "
                "resume it)"
            )
        # a run that wrote no shard yet (it stopped on a bad row of the first shard) has nothing to keep: the
        # rerun after fixing the data simply starts again
    elif (out / "data").exists() and any((out / "data").iterdir()):
        raise OutputConflictError(f"{out}/data holds files of an unknown run; choose another --out or --overwrite")
    (out / "data").mkdir(parents=True, exist_ok=True)
    state.mkdir(parents=True, exist_ok=True)
    for folder in (out, out / "data", state):  # temporaries of a killed run never become part of the output
        cleanup_temporaries(folder)
    atomic_write_json(state / "run.json", run)
    return False


def _shard_done(state_path: Path) -> bool:
    """A shard's state file exists and is readable; a damaged one (edited, disk error) means: compute it again."""
    if not state_path.is_file():
        return False
    try:
        state = read_output_json(state_path)
    except DamagedOutputError as err:
        print(f"warning: {err}; recomputing that shard", file=sys.stderr)
        return False
    return isinstance(state, dict) and {"n_input", "skipped", "stats"} <= set(state)


def _non_finite_field(result: ShardResult, j: int, delta: Any) -> tuple[str, str]:
    """The score column a non-finite δ comes from, and why.

    A guard for any processor: official `chosen_logits`/`rejected_logits` never get here, since the one official
    parser (`dama.official_release`) refuses a non-finite score earlier, naming the field the user wrote.
    """
    for side in ("chosen", "rejected"):
        scores = result.columns.get(f"{side}_clip_probs", [])
        bad = [v for v in (scores[j] if j < len(scores) and scores[j] else []) if v is None or not math.isfinite(v)]
        if bad:
            return f"{side}_clip_probs", f"score {bad[0]} is not a finite number, so δ is not either"
    return HARDNESS_COLUMN, f"δ is not a finite number ({delta})"


def _screen(result: ShardResult, table: pa.Table, first_row: int, processor: ShardProcessor) -> ShardResult:
    """Rows no processor may pass: a non-finite δ, or identical chosen and rejected responses.

    An identical pair carries no preference signal (its DPO margin is 0 by construction) and only shifts R̄; a NaN or
    infinite δ would make α_D, β and the loss NaN. Under `--on-error fail` the first one stops the run with the row
    and field; under `skip` it is left out and reported in skipped.jsonl like any other bad row.
    """
    on_error = getattr(processor, "on_error", "fail")
    source = getattr(processor, "source_name", "input")
    ids = row_ids(table, first_row)
    chosen = table.column("chosen").to_pylist() if "chosen" in table.column_names else None
    rejected = table.column("rejected").to_pylist() if "rejected" in table.column_names else None
    problems: dict[int, RowProblem] = {}
    for j, i in enumerate(result.kept):
        delta = result.columns[HARDNESS_COLUMN][j]
        if chosen is not None and rejected is not None:
            text = response_text(chosen[i])
            if text and text == response_text(rejected[i]):
                reason = "identical to 'chosen': the pair carries no preference"
                problems[j] = RowProblem(i, ids[i], "rejected", reason)
                continue
        if delta is None or not math.isfinite(delta):
            problems[j] = RowProblem(i, ids[i], *_non_finite_field(result, j, delta))
    if not problems:
        return result
    if on_error == "fail":
        first = problems[min(problems)]
        raise HardnessDataError(
            f"{source} row {first.row_id} field {first.field!r}: {first.reason} (fix the data and rerun, or pass "
            "--on-error skip to leave such rows out)"
        )
    keep = [j for j in range(len(result.kept)) if j not in problems]
    columns = {name: [values[j] for j in keep] for name, values in result.columns.items()}
    position = {row_id: k for k, row_id in reversed(list(enumerate(ids)))}
    skipped = sorted(
        [*result.skipped, *(p.record() for p in problems.values())], key=lambda rec: position.get(rec["row_id"], -1)
    )
    return ShardResult([result.kept[j] for j in keep], columns, skipped, result.stats)


def run_shards(
    source: InputSource,
    out: str | Path,
    processor: ShardProcessor,
    *,
    shard_size: int = 1000,
    limit: int | None = None,
    delta_mean: float | None = None,
    delta_mean_source: str = "computed",
    overwrite: bool = False,
    progress: bool = True,
    extra_run: dict[str, Any] | None = None,
    after_shard: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Process `source` into the output folder `out`, resuming a previous run of the same settings.

    Args:
        delta_mean: δ̄ to store instead of the computed mean (docs/paper_mapping.md §2 step 4); `delta_mean_source` says why.
        after_shard: called with the shard index after each shard is durably written (tests inject kills here).

    Returns:
        The metadata written to `hardness.json`.
    """
    from tqdm.auto import tqdm

    out = Path(out)
    if delta_mean is not None:
        delta_mean = require_finite(delta_mean, "δ̄ override (--delta-mean)")
    run = {
        "input": _input_fingerprint(source),
        "processor": processor.describe(),
        "shard_size": shard_size,
        "limit": limit,
        "delta_mean_override": delta_mean,
        **(extra_run or {}),
    }
    run = json.loads(json.dumps(run))  # normalise tuples etc. so a comparison with the stored copy is exact
    if _prepare(out, run, overwrite):
        print(f"{out}: already complete (same input and settings); nothing to do", file=sys.stderr)
        return json.loads((out / METADATA_FILE).read_text(encoding="utf-8"))

    total = count_rows(source)
    total = min(total, limit) if (total is not None and limit is not None) else (total if limit is None else limit)
    bar = tqdm(total=total, unit="pair", desc="dama hardness", disable=not progress, dynamic_ncols=True)
    n_input = 0
    shards: list[str] = []
    try:
        for index, table in enumerate(source.iter_tables(shard_size)):
            if limit is not None and n_input + table.num_rows > limit:
                table = table.slice(0, max(0, limit - n_input))
            if table.num_rows == 0:
                break
            name = shard_name(index)
            state_path = out / STATE_DIR / f"{name}.json"
            if not (_shard_done(state_path) and (out / "data" / name).is_file()):
                result = _screen(processor.process(table, n_input), table, n_input, processor)
                kept = table.take(pa.array(result.kept, type=pa.int64()))
                atomic_write_table(out / "data" / name, with_hardness_columns(kept, result.columns, source.features))
                state = {
                    "first_row": n_input,
                    "n_input": table.num_rows,
                    "n_rows": len(result.kept),
                    "skipped": result.skipped,
                    "stats": result.stats,
                }
                atomic_write_json(state_path, state)
                del kept, result  # the next shard is read before `for` rebinds these: keep one shard alive
            shards.append(name)
            n_input += table.num_rows
            bar.update(table.num_rows)
            del table
            if after_shard is not None:
                after_shard(index)
            if limit is not None and n_input >= limit:
                break
    finally:
        bar.close()
    return finalize(out, source, shards, run, delta_mean, delta_mean_source)


def _write_skipped(out: Path, skipped: list[dict[str, Any]]) -> Path:
    lines = "".join(json.dumps(rec, ensure_ascii=False, sort_keys=True) + "\n" for rec in skipped)
    atomic_write_bytes(out / "skipped.jsonl", lines.encode("utf-8"))
    return out / "skipped.jsonl"


def _refuse_empty(out: Path, source: InputSource, skipped: list[dict[str, Any]], n_input: int) -> None:
    """`HardnessDataError` for a run that kept no row: the input holds none, or every row was skipped (then the
    list of skipped rows is written first, and the message says where it is). `hardness.json` is not written."""
    if n_input == 0:
        raise HardnessDataError(
            f"{source.path}: the input holds no rows, so there is nothing to score; give --data a file with "
            "preference pairs (question/prompt, chosen, rejected, image)"
        )
    listed = _write_skipped(out, skipped)
    reasons = sorted({str(rec.get("field")) for rec in skipped})
    raise HardnessDataError(
        f"{source.path}: every one of its {n_input} row(s) was skipped (--on-error skip; bad fields: "
        f"{', '.join(reasons)}), so the output would hold no pair to train on. The rows and why are listed in "
        f"{listed}; fix them and run again with --overwrite"
    )


def finalize(
    out: Path,
    source: InputSource,
    shards: list[str],
    run: dict[str, Any],
    delta_mean: float | None,
    delta_mean_source: str,
) -> dict[str, Any]:
    """Aggregate the shard states, write skipped.jsonl, the histogram, the summary and, last, hardness.json."""
    states = [read_output_json(out / STATE_DIR / f"{s}.json") for s in shards]
    deltas: list[float] = []
    for s in shards:
        deltas.extend(pq.read_table(out / "data" / s, columns=[HARDNESS_COLUMN]).column(HARDNESS_COLUMN).to_pylist())
    skipped = [rec for st in states for rec in st["skipped"]]
    if not deltas:  # an output of no pair trains nothing (and has no δ̄): refused, even with a δ̄ override
        _refuse_empty(out, source, skipped, sum(st["n_input"] for st in states))
    computed = mean_delta(deltas) if deltas else None
    delta_mean, how = resolve_delta_mean(deltas, override=delta_mean, override_name="δ̄ override (--delta-mean)")
    if how != "override":  # an override keeps the caller's label ("override", or "official" for the release's δ̄)
        delta_mean_source = how
    stats = [st["stats"] for st in states]
    truncation = {}
    if any("truncated_chosen" in s for s in stats):
        truncation = {
            "chosen": sum(s.get("truncated_chosen", 0) for s in stats),
            "rejected": sum(s.get("truncated_rejected", 0) for s in stats),
            "rows": sum(s.get("truncated_rows", 0) for s in stats),
            "n_texts": sum(s.get("n_texts", 0) for s in stats),
            "max_tokens": next((s["max_tokens"] for s in stats if "max_tokens" in s), None),
        }
    examples = [ex for s in stats for ex in s.get("examples", [])]
    processor = run["processor"]
    meta = {
        "format": FORMAT,
        "version": __version__,
        "complete": True,
        "input": str(source.path),
        "delta_mean": float(delta_mean),
        "delta_mean_source": delta_mean_source,
        "delta_mean_computed": computed,
        "delta_column": HARDNESS_COLUMN,
        "delta_stats": delta_stats(deltas),
        "n_input_rows": sum(st["n_input"] for st in states),
        "n_rows": len(deltas),
        "n_skipped": len(skipped),
        "clip_model": processor.get("clip_model"),
        "scorer": processor.get("scorer"),
        "splitter": processor.get("splitter"),
        "truncation": truncation,
        "shards": shards,
        "run": run,
    }
    _write_skipped(out, skipped)
    title = f"{source.path.name}: {len(deltas)} pairs, scorer {meta['scorer']}"
    delta_histogram(deltas, float(delta_mean), out / "delta_hist.png", title)
    write_summary(out / "summary.md", meta, skipped, examples)
    atomic_write_json(out / METADATA_FILE, meta)  # last: from here on the output is complete
    shutil.rmtree(out / STATE_DIR, ignore_errors=True)
    return meta
