"""`dama eval compare`: one side-by-side markdown table of every results file in several run folders.

Rows are `benchmark[split, extraction] / metric`, columns are runs. A value from a partial result is marked with `*`.
When a run has both AMBER halves, the AMBER score ((100 − CHAIR) + F1) / 2 (Wang et al. 2023) is added as a row.
Counts (`n_*`, confusion-matrix cells) are left out unless `all_metrics`.
"""

from __future__ import annotations

from pathlib import Path

from dama.eval.amber import amber_score
from dama.eval.records import RecordError, read_json

_COUNT_KEYS = {"tp", "fp", "tn", "fn", "n"}


def _label(result: dict, path: Path) -> str:
    """Row label: benchmark [split, extraction mode, judge, similarity backend] — modes and judges never mix."""
    bench = result.get("benchmark")
    if not bench:
        raise RecordError(f"{path}: results file has no 'benchmark'")
    parts = []
    split = result.get("split")
    if split and split not in ("generative", "discriminative"):
        parts.append(str(split))
    extraction = result.get("extraction")
    extraction = extraction if isinstance(extraction, dict) else {}
    if extraction.get("mode") in ("rule", "llm"):
        parts.append(extraction["mode"])
    judge = extraction.get("judge_id") or result.get("judge_id") or result.get("judge")
    if judge:
        parts.append(f"judge={judge}")
    if extraction.get("similarity") not in (None, "none"):
        parts.append(f"sim={extraction['similarity']}")
    return f"{bench} [{', '.join(parts)}]" if parts else str(bench)


def load_run(run_dir: str | Path) -> tuple[dict[str, dict], dict[str, bool]]:
    """`{row label: {metric: value}}` and `{row label: partial}` for the results files of one run folder.

    Results files are the folder's `*.json` files with a `benchmark` and a `metrics` object (rule-based scorers write
    `<bench>.metrics.json`, judge-based ones `<responses>.<bench>.<judge>.json`); other JSON files are skipped.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RecordError(f"{run_dir}: run folder not found")
    rows: dict[str, dict] = {}
    partial: dict[str, bool] = {}
    sources: dict[str, Path] = {}
    for path in sorted(run_dir.glob("*.json")):
        result = read_json(path)
        if not isinstance(result, dict) or "benchmark" not in result or not isinstance(result.get("metrics"), dict):
            continue
        label = _label(result, path)
        if label in rows:
            raise RecordError(f"{path}: same benchmark/split/extraction as {sources[label]}; keep one per run folder")
        rows[label], partial[label], sources[label] = result["metrics"], bool(result.get("partial")), path
    amber_g = next((label for label in rows if label.startswith("amber-g")), None)
    amber_d = next((label for label in rows if label.startswith("amber-d")), None)
    if amber_g and amber_d:
        chair, f1 = rows[amber_g].get("CHAIR"), rows[amber_d].get("f1")
        if chair is not None and f1 is not None:
            rows["amber"] = {"AMBER_score": amber_score(chair, f1)}
            partial["amber"] = partial[amber_g] or partial[amber_d]
    return rows, partial


def _format(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def compare_table(run_dirs: list[str | Path], all_metrics: bool = False) -> str:
    """The markdown table comparing `run_dirs` (column names: folder names, or paths when names repeat)."""
    if not run_dirs:
        raise RecordError("compare needs at least one run folder")
    names = [Path(d).name or str(d) for d in run_dirs]
    if len(set(names)) < len(names):
        names = [str(d) for d in run_dirs]
    runs = [load_run(d) for d in run_dirs]
    labels: list[str] = []
    for rows, _ in runs:
        labels += [label for label in rows if label not in labels]
    if not labels:
        raise RecordError(
            f"no results files (*.json with 'benchmark' and 'metrics') in {', '.join(map(str, run_dirs))}; run `dama eval score` first"
        )
    lines = ["| benchmark / metric | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    any_partial = False
    for label in sorted(labels):
        metrics: list[str] = []
        for rows, _ in runs:
            for key, value in rows.get(label, {}).items():
                numeric = isinstance(value, (int, float)) and not isinstance(value, bool) or value is None
                is_count = key.split("/")[-1].startswith("n_") or key.split("/")[-1] in _COUNT_KEYS
                if key not in metrics and numeric and (all_metrics or not is_count):
                    metrics.append(key)
        for key in metrics:
            cells = []
            for rows, partial in runs:
                if label not in rows:
                    cells.append("")
                    continue
                mark = "*" if partial[label] else ""
                any_partial |= bool(mark)
                cells.append(_format(rows[label].get(key)) + mark)
            lines.append(f"| {label} / {key} | " + " | ".join(cells) + " |")
    if any_partial:
        lines += ["", "\\* partial result: some responses were missing or could not be judged (see the metrics file)."]
    return "\n".join(lines) + "\n"
