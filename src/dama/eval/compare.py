"""`dama eval compare`: one side-by-side markdown table of every results file in several run folders.

Rows are `benchmark[split, extraction] / metric`, columns are runs. A value from a partial result is marked with `*`.
When a run has both AMBER halves, the AMBER score ((100 − CHAIR) + F1) / 2 (Wang et al. 2023) is added as a row.
Counts (`n_*`, confusion-matrix cells) are left out unless `all_metrics`.

Numbers are comparable only when they were made the same way. Every results file records its scoring settings
(`extraction`: mode, noun extraction, similarity backend, judge, prompt; `synonyms`: list version and sha256; a
judged benchmark's `judge_id` and `prompt_version`). When one row's settings differ between runs, the row is marked
`≠` and a note below the table lists what differs; `mixed="refuse"` (`--refuse-mixed`) makes that an error instead.
"""

from __future__ import annotations

import json
from pathlib import Path

from dama.eval.amber_metrics import amber_score
from dama.eval.records import RecordError, read_json

_COUNT_KEYS = {"tp", "fp", "tn", "fn", "n"}
# top-level results fields that decide how a number was made (judged benchmarks keep them at the top level)
_SETTING_KEYS = ("synonyms", "judge_id", "judge", "prompt_version")
MIXED = ("mark", "refuse")


def settings(result: dict) -> dict:
    """The scoring settings of one results file: its `extraction` record without counts, synonym list, judge, prompt.

    Two results with different settings must not be compared as if they were the same measurement.
    """
    extraction = result.get("extraction")
    extraction = extraction if isinstance(extraction, dict) else {}
    found = {f"extraction.{k}": v for k, v in extraction.items() if not k.startswith("n_")}
    found.update({k: result[k] for k in _SETTING_KEYS if result.get(k) is not None})
    return found


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
    """`{row label: {metric: value}}` and `{row label: partial}` for the results files of one run folder."""
    rows, partial, _ = load_run_settings(run_dir)
    return rows, partial


def load_run_settings(run_dir: str | Path) -> tuple[dict[str, dict], dict[str, bool], dict[str, dict]]:
    """`load_run` plus `{row label: settings(result)}`.

    Results files are the folder's `*.json` files with a `benchmark` and a `metrics` object (rule-based scorers write
    `<bench>.metrics.json`, judge-based ones `<responses>.<bench>.<judge>.json`); other JSON files are skipped.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RecordError(f"{run_dir}: run folder not found")
    rows: dict[str, dict] = {}
    partial: dict[str, bool] = {}
    sources: dict[str, Path] = {}
    found: dict[str, dict] = {}
    for path in sorted(run_dir.glob("*.json")):
        result = read_json(path)
        if not isinstance(result, dict) or "benchmark" not in result or not isinstance(result.get("metrics"), dict):
            continue
        label = _label(result, path)
        if label in rows:
            raise RecordError(f"{path}: same benchmark/split/extraction as {sources[label]}; keep one per run folder")
        rows[label], partial[label], sources[label] = result["metrics"], bool(result.get("partial")), path
        found[label] = settings(result)
    amber_g = next((label for label in rows if label.startswith("amber-g")), None)
    amber_d = next((label for label in rows if label.startswith("amber-d")), None)
    if amber_g and amber_d:
        chair, f1 = rows[amber_g].get("CHAIR"), rows[amber_d].get("f1")
        if chair is not None and f1 is not None:
            rows["amber"] = {"AMBER_score": amber_score(chair, f1)}
            chair_rep, f1_rep = rows[amber_g].get("CHAIR_reported"), rows[amber_d].get("f1_reported")
            if chair_rep is not None and f1_rep is not None:
                rows["amber"]["AMBER_score_reported"] = amber_score(chair_rep, f1_rep)
            partial["amber"] = partial[amber_g] or partial[amber_d]
            found["amber"] = {**{f"g.{k}": v for k, v in found[amber_g].items()}, **found[amber_d]}
    return rows, partial, found


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


def _differences(label: str, names: list[str], per_run: list[dict | None]) -> list[str]:
    present = [(name, s) for name, s in zip(names, per_run, strict=True) if s is not None]
    keys = sorted({k for _, s in present for k in s})
    lines = []
    for key in keys:
        values = [json.dumps(s.get(key), sort_keys=True) for _, s in present]
        if len(set(values)) > 1:
            lines.append(f"{label}: {key} differs: " + "; ".join(f"{n} = {v}" for (n, _), v in zip(present, values)))
    return lines


def _shown_metrics(label: str, runs: list[tuple[dict, dict]], all_metrics: bool) -> list[str]:
    """The metric keys of `label` in first-seen order over the runs: numbers, and counts only with `all_metrics`."""
    metrics: list[str] = []
    for rows, _ in runs:
        for key, value in rows.get(label, {}).items():
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool) or value is None
            is_count = key.split("/")[-1].startswith("n_") or key.split("/")[-1] in _COUNT_KEYS
            if key not in metrics and numeric and (all_metrics or not is_count):
                metrics.append(key)
    return metrics


def _cell(rows: dict, partial: dict, label: str, key: str) -> str:
    """One run's cell of the table: empty without that result, `*` after the value of a partial one."""
    if label not in rows:
        return ""
    return _format(rows[label].get(key)) + ("*" if partial[label] else "")


def compare_table(run_dirs: list[str | Path], all_metrics: bool = False, mixed: str = "mark") -> str:
    """The markdown table comparing `run_dirs` (column names: folder names, or paths when names repeat).

    A row whose scoring settings differ between runs is marked `≠` with the differences listed below the table
    (`mixed="mark"`), or is an error (`mixed="refuse"`).
    """
    if mixed not in MIXED:
        raise ValueError(f"mixed must be one of {MIXED}, not {mixed!r}")
    if not run_dirs:
        raise RecordError("compare needs at least one run folder")
    names = [Path(d).name or str(d) for d in run_dirs]
    if len(set(names)) < len(names):
        names = [str(d) for d in run_dirs]
    loaded = [load_run_settings(d) for d in run_dirs]
    runs = [(rows, partial) for rows, partial, _ in loaded]
    labels: list[str] = []
    for rows, _ in runs:
        labels += [label for label in rows if label not in labels]
    if not labels:
        raise RecordError(
            f"no results files (*.json with 'benchmark' and 'metrics') in {', '.join(map(str, run_dirs))}; run `dama eval score` first"
        )
    lines = ["| benchmark / metric | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    any_partial = False
    notes: list[str] = []
    for label in sorted(labels):
        differences = _differences(label, names, [found.get(label) for _, _, found in loaded])
        if differences and mixed == "refuse":
            raise RecordError(
                "results made with different scoring settings are not comparable: " + " | ".join(differences)
            )
        notes += differences
        shown = f"{label} ≠" if differences else label
        for key in _shown_metrics(label, runs, all_metrics):
            cells = [_cell(rows, partial, label, key) for rows, partial in runs]
            any_partial |= any(cell.endswith("*") for cell in cells)
            lines.append(f"| {shown} / {key} | " + " | ".join(cells) + " |")
    if any_partial:
        lines += ["", "\\* partial result: some responses were missing or could not be judged (see the metrics file)."]
    if notes:
        lines += ["", "≠ scored with different settings in different runs, not comparable:"]
        lines += [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"
