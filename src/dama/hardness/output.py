"""The hardness output folder: atomic shard writes, the final metadata, summary and histogram, and reading it back.

Layout of `--out DIR`:

    data/shard-00000.parquet ...   input rows kept (all input columns) + the five hardness columns
    skipped.jsonl                  one line per row left out: row id, field, reason
    summary.md, delta_hist.png     counts, δ statistics and histogram, truncated texts, skipped rows
    hardness.json                  metadata (δ̄ = `delta_mean`, counts, model, scorer, splitter, ...), written LAST
    .state/                        per-shard progress while running (removed once complete)

`hardness.json` with `"complete": true` is the only sign of a finished output; `read_hardness_output` refuses a
folder without it. Every file is written to a temporary name and renamed, so a kill never leaves a half file under
a final name.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from dama.delta import HARDNESS_COLUMN
from dama.errors import DamaError, NonFiniteError, require_finite
from dama.io import atomic_target, atomic_write_bytes
from dama.io import atomic_write_json as write_json

FORMAT = "dama-hardness"
METADATA_FILE = "hardness.json"
NEW_COLUMNS = (
    "chosen_subsentences",
    "rejected_subsentences",
    "chosen_clip_probs",
    "rejected_clip_probs",
    HARDNESS_COLUMN,
)
NEW_TYPES = {
    "chosen_subsentences": pa.list_(pa.string()),
    "rejected_subsentences": pa.list_(pa.string()),
    "chosen_clip_probs": pa.list_(pa.float64()),
    "rejected_clip_probs": pa.list_(pa.float64()),
    HARDNESS_COLUMN: pa.float64(),
}


class IncompleteOutputError(DamaError, RuntimeError):
    """A hardness folder that is not (yet) a complete output."""


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.parquet"


def atomic_write_json(path: Path, obj: Any) -> None:
    """Hardness metadata and state: sorted keys, so reruns are byte-identical."""
    write_json(path, obj, sort_keys=True)


def atomic_write_table(path: Path, table: pa.Table) -> None:
    with atomic_target(path) as tmp:
        pq.write_table(table, tmp)


def with_hardness_columns(
    table: pa.Table, columns: dict[str, list], input_features: dict[str, Any] | None
) -> pa.Table:
    """`table` (the kept input rows) with the hardness columns appended (replacing same-named input columns).

    The `datasets` features of the input (e.g. `Image`) are carried into the schema metadata, so loading the shard
    with `datasets` decodes images as the input did.
    """
    table = table.drop_columns([c for c in NEW_COLUMNS if c in table.column_names])
    for name in NEW_COLUMNS:
        table = table.append_column(pa.field(name, NEW_TYPES[name]), pa.array(columns[name], type=NEW_TYPES[name]))
    features = {k: v for k, v in (input_features or {}).items() if k in table.column_names}
    if features:
        import datasets

        inferred = datasets.Features.from_arrow_schema(table.schema.remove_metadata()).to_dict()
        inferred.update(features)
        meta = {b"huggingface": json.dumps({"info": {"features": inferred}}).encode("utf-8")}
        table = table.replace_schema_metadata(meta)
    else:
        table = table.replace_schema_metadata(None)
    return table


def delta_histogram(deltas: Sequence[float], delta_mean: float, path: Path, title: str) -> None:
    """A PNG histogram of δ over [−1, 1] with δ̄ marked; no timestamps or versions, so reruns are byte-identical."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8), dpi=100, layout="constrained")
    ax.hist(list(deltas), bins=50, range=(-1.0, 1.0), color="#4477aa")
    ax.axvline(delta_mean, color="#cc3311", linestyle="--", label=f"delta_mean (δ̄) = {delta_mean:.4f}")
    ax.set_xlabel("δ = score_w − score_l  (large = easy pair)")
    ax.set_ylabel("pairs")
    ax.set_title(title, fontsize=9)
    fig.legend(loc="outside lower center", fontsize=9, frameon=False)  # below the axes: it never covers a bar
    with atomic_target(path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    plt.close(fig)


def delta_stats(deltas: Sequence[float]) -> dict[str, float]:
    if not deltas:
        return {}
    values = sorted(deltas)
    n = len(values)
    mean = math.fsum(values) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / n)

    def quantile(q: float) -> float:
        return values[min(n - 1, int(q * (n - 1) + 0.5))]

    return {
        "mean": mean,
        "std": std,
        "min": values[0],
        "p25": quantile(0.25),
        "median": quantile(0.5),
        "p75": quantile(0.75),
        "max": values[-1],
        "fraction_negative": sum(v < 0 for v in values) / n,
    }


def write_summary(path: Path, meta: dict[str, Any], skipped: list[dict], truncated_examples: list[dict]) -> None:
    s = meta.get("delta_stats", {})
    lines = [
        "# dama hardness summary",
        "",
        f"- input: `{meta['input']}`",
        f"- dual encoder: `{meta.get('clip_model')}`, scorer `{meta.get('scorer')}`, splitter "
        f"`{(meta.get('splitter') or {}).get('name')}`",
        f"- rows read: {meta['n_input_rows']}, written: {meta['n_rows']}, skipped: {meta['n_skipped']}",
        f"- δ̄ used by training: **{meta['delta_mean']}** ({meta['delta_mean_source']}); "
        f"computed mean of δ: {meta.get('delta_mean_computed')}",
    ]
    if s:
        lines.append(
            f"- δ: std {s['std']:.4f}, min {s['min']:.4f}, p25 {s['p25']:.4f}, median {s['median']:.4f}, "
            f"p75 {s['p75']:.4f}, max {s['max']:.4f}, fraction < 0: {s['fraction_negative']:.3f}"
        )
    trunc = meta.get("truncation") or {}
    if trunc:
        lines.append(
            f"- sub-sentences scored: {trunc.get('n_texts', 0)}; truncated at {trunc.get('max_tokens')} tokens: "
            f"{trunc.get('chosen', 0)} chosen, {trunc.get('rejected', 0)} rejected (in {trunc.get('rows', 0)} rows)"
        )
    lines += ["", "![δ histogram](delta_hist.png)", ""]
    if truncated_examples:
        lines += ["## Truncated texts (first ones)", "", "| row | field | tokens | text |", "|---|---|---|---|"]
        for ex in truncated_examples[:20]:
            text = ex["text"].replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {ex['row_id']} | {ex['field']} | {ex['tokens']} | {text[:160]} |")
        lines.append("")
    if skipped:
        lines += [
            f"## Skipped rows ({len(skipped)}; all in skipped.jsonl)",
            "",
            "| row | field | reason |",
            "|---|---|---|",
        ]
        for rec in skipped[:50]:
            reason = str(rec["reason"]).replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {rec['row_id']} | {rec['field']} | {reason[:200]} |")
        lines.append("")
    atomic_write_bytes(path, "\n".join(lines).encode("utf-8"))


RECOVER = "rerun the same `dama hardness` command with --overwrite to rebuild the output"


class DamagedOutputError(IncompleteOutputError):
    """A file of a hardness output folder that cannot be read (truncated, edited, wrong type)."""


def read_output_json(path: Path, recover: str = RECOVER) -> Any:
    """A JSON file of the output folder; `DamagedOutputError` naming the file and how to recover when unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise DamagedOutputError(f"{path} is damaged (not UTF-8 text at byte {err.start}); {recover}") from err
    except json.JSONDecodeError as err:
        raise DamagedOutputError(
            f"{path} is damaged (not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}; a truncated "
            f"or edited file?); {recover}"
        ) from err


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of a complete output; raises `IncompleteOutputError` for anything else.

    δ̄ (`delta_mean`) must be a finite number: a NaN would make every α_D NaN and train a NaN model.
    """
    path = Path(path)
    meta_path = path / METADATA_FILE
    if not meta_path.is_file():
        raise IncompleteOutputError(
            f"{path} is not a complete `dama hardness` output: {METADATA_FILE} is missing (the run has not finished "
            "or was interrupted; run the same `dama hardness` command again to resume it)"
        )
    meta = read_output_json(meta_path)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("complete") is not True:
        raise IncompleteOutputError(f"{meta_path} does not mark a complete `dama hardness` output; {RECOVER}")
    value = meta.get("delta_mean")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DamagedOutputError(f"{meta_path}: field 'delta_mean' must be a number, got {value!r}; {RECOVER}")
    try:
        require_finite(value, f"{meta_path}: field 'delta_mean' (δ̄)")
    except NonFiniteError as err:
        raise NonFiniteError(
            f"{err}. Rerun `dama hardness` with a finite --delta-mean (or without it, to store the computed mean) "
            "and --overwrite"
        ) from err
    if not isinstance(meta.get("shards"), list):
        raise DamagedOutputError(f"{meta_path}: field 'shards' must be a list of file names; {RECOVER}")
    missing = [f for f in meta["shards"] if not (path / "data" / f).is_file()]
    if missing:
        raise IncompleteOutputError(f"{path}: shard files listed in {METADATA_FILE} are missing: {missing[:5]}")
    return meta


def read_hardness_output(path: str | Path, as_dataset: bool = True):
    """Load a complete `dama hardness` output folder.

    Returns:
        `(data, delta_mean)`: the pairs with their δ column (`dama.row_fields.HARDNESS_COLUMN`) — a `datasets.Dataset` (default) or a
        `pyarrow.Table` with `as_dataset=False` — and δ̄ as stored (docs/paper_mapping.md §2 step 4: the computed mean, the official
        constant for imported official data, or the override given to `dama hardness --delta-mean`).

    Raises:
        IncompleteOutputError: no `hardness.json` with `complete: true` (an unfinished or interrupted run).
    """
    path = Path(path)
    meta = read_metadata(path)
    tables = []
    for name in meta["shards"]:
        try:
            tables.append(pq.read_table(path / "data" / name))
        except (pa.ArrowInvalid, OSError) as err:
            raise DamagedOutputError(f"{path / 'data' / name} is damaged ({err}); {RECOVER}") from err
    table = pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({})
    if as_dataset:
        import datasets

        data = datasets.Dataset(table)
    else:
        data = table
    return data, float(meta["delta_mean"])
