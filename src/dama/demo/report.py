"""The demo's report: a markdown file with the results table and a verdict computed from the numbers, plus plots."""

from __future__ import annotations

import platform
import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from dama.config import DAMAConfig  # noqa: E402
from dama.demo.experiment import METHODS  # noqa: E402
from dama.demo.frontier import interval_text, matched_recall_outcome  # noqa: E402
from dama.demo.models import cpu_name  # noqa: E402
from dama.demo.pool import usable_cpus  # noqa: E402
from dama.objective import combine_beta, data_aware_factor  # noqa: E402

ROWS = ["base", *METHODS]
COLOURS = {
    "base": "#888888",
    "DPO": "#1f77b4",
    "DAMA": "#d62728",
    "data-aware only": "#2ca02c",
    "model-aware only": "#9467bd",
    "DAMA (paper reading)": "#ff7f0e",
    "β-DPO": "#8c564b",
    "mDPO": "#17becf",
}


def _primary(summary: dict[str, Any]) -> str:
    return summary["config"]["regimes"][0]


def _primary_runs(summary: dict[str, Any], method: str) -> list[dict]:
    return summary["runs"][_primary(summary)].get(method, [])


def _fmt(stat: dict[str, float | None]) -> str:
    if stat["mean"] is None:
        return "n/a"
    return f"{stat['mean']:.1f} ± {stat['std']:.1f}"


def _logged(history: list[dict], key: str) -> tuple[list[int], list[float]]:
    points = [(h["step"], h[key]) for h in history if key in h and "step" in h]
    return [p[0] for p in points], [p[1] for p in points]


def _figure(ncols: int, size: tuple[float, float], **kwargs: Any):
    """A row of `ncols` panels laid out by matplotlib's constrained layout, which keeps room for a legend placed
    outside the panels (`_legend`): no legend covers a curve or a bar, whatever the data."""
    return plt.subplots(1, ncols, figsize=size, layout="constrained", squeeze=False, **kwargs)


def _legend(fig, axes, ncol: int | None = None, where: str = "lower") -> None:
    """One legend for every panel, outside them (below, or above with `where="upper"`): each label once."""
    handles: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    if handles:
        fig.legend(
            list(handles.values()),
            list(handles),
            loc=f"outside {where} center",
            fontsize=8,
            frameon=False,
            ncol=ncol or len(handles),
        )


def _save(fig, path: Path) -> None:
    """Lay out, write the PNG and free the figure (pyplot keeps every open figure alive)."""
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_beta_vs_delta(summary: dict[str, Any], path: Path) -> None:
    import torch

    beta = summary["regimes"][_primary(summary)]["settings"]["beta"]
    deltas = sorted(summary["deltas"])
    alpha_d = data_aware_factor(torch.tensor(deltas), summary["delta_mean"]).tolist()
    alpha_m = [v for run in _primary_runs(summary, "DAMA") for v in _logged(run["history"], "dama/alpha_m")[1]]
    mean_alpha_m = statistics.fmean(alpha_m) if alpha_m else 1.0
    fig, axes = _figure(1, (5, 4.0))
    ax = axes[0, 0]
    ax.plot(deltas, [beta] * len(deltas), color=COLOURS["DPO"], label="DPO: β")
    ax.plot(deltas, [beta * a for a in alpha_d], color=COLOURS["data-aware only"], label="β·α_D (data-aware only)")
    beta_min = DAMAConfig.__dataclass_fields__["beta_min"].default  # the demo's runs keep the default clamp
    beta_c = combine_beta(beta, torch.tensor(alpha_d), mean_alpha_m, beta_min).tolist()  # Eq. 15-16
    ax.plot(deltas, beta_c, color=COLOURS["DAMA"], label=f"DAMA: β·α_D·ᾱ_M (ᾱ_M = {mean_alpha_m:.2f})")
    ax.axvline(summary["delta_mean"], color="k", lw=0.6, ls=":", label="δ̄")
    ax.set_xlabel("hardness gap δ (CLIP; large = easy pair)")
    ax.set_ylabel("β_C")
    _legend(fig, [ax], ncol=2)
    _save(fig, path)


SEED_STYLES = ("-", "--", ":", "-.")


def plot_model_aware(summary: dict[str, Any], path: Path) -> None:
    fig, axes = _figure(2, (8, 3.6))
    axes = axes[0]
    for k, run in enumerate(_primary_runs(summary, "DAMA")):
        for ax, key, label in ((axes[0], "dama/alpha_m", "α_M"), (axes[1], "dama/reward_gap_ema", "R̄")):
            steps, values = _logged(run["history"], key)
            ax.plot(
                steps,
                values,
                SEED_STYLES[k % len(SEED_STYLES)],
                color=COLOURS["DAMA"],
                alpha=0.8,
                lw=1.2,
                label=f"seed {run['seed']}",
            )  # one line style per seed: the colour is DAMA's in every plot
            ax.set_xlabel("step")
            ax.set_ylabel(label)
    axes[0].axhline(1.0, color="k", lw=0.5, ls=":")
    fig.suptitle("Model-aware statistics during DAMA training", fontsize=9)
    _legend(fig, axes)
    _save(fig, path)


def plot_responsiveness(summary: dict[str, Any], path: Path) -> None:
    """Mean margin h of fixed easy and hard pairs during DPO and DAMA training (the paper's Fig. 1 picture), with
    easy/hard chosen by the ground-truth hallucination gap (left) and by CLIP's δ (right)."""
    fig, axes = _figure(2, (9, 3.8), sharey=True)
    axes = axes[0]
    for ax, basis in zip(axes, ("gap", "δ")):
        for method in ("DPO", "DAMA"):
            curves = [run["margins"] for run in _primary_runs(summary, method) if run["margins"]]
            if not curves:
                continue
            steps = [row["step"] for row in curves[0]]
            for group, style in (("easy", "-"), ("hard", "--")):
                key = f"{group} ({basis})"
                mean = [statistics.fmean(c[i][key] for c in curves) for i in range(len(steps))]
                ax.plot(steps, mean, style, color=COLOURS[method], label=f"{method}, {group}")
        ax.set_title(f"easy / hard by {'ground-truth gap' if basis == 'gap' else 'CLIP δ'}", fontsize=9)
        ax.set_xlabel("step")
    axes[0].set_ylabel("mean reward margin h")
    _legend(fig, axes)
    _save(fig, path)


def plot_results(summary: dict[str, Any], path: Path) -> None:
    """The single-point rule's table as bars, mean ± std over seeds; the methods are named once, in a legend above
    the panels (names under the bars ran into each other)."""
    fig, axes = _figure(3, (10, 3.9))
    axes = axes[0]
    names = [n for n in ROWS if n in summary["table"]]
    for ax, key in zip(axes, ("CHAIR_i", "CHAIR_s", "recall")):
        means = [summary["table"][n][key]["mean"] or 0.0 for n in names]
        stds = [summary["table"][n][key]["std"] or 0.0 for n in names]
        for k, (name, mean, std) in enumerate(zip(names, means, stds)):
            ax.bar(k, mean, yerr=std, color=COLOURS[name], capsize=3, label=name)
        ax.set_xticks([])
        ax.set_title(f"{key} (%)", fontsize=9)
    _legend(fig, axes, ncol=min(len(names), 6), where="upper")
    _save(fig, path)


def _interval(stat: dict[str, Any] | None) -> str:
    return interval_text(stat)


def plot_frontiers(summary: dict[str, Any], path: Path) -> None:
    """One panel per regime: each method's (recall, CHAIR_i) on the test images per learning rate, mean over seeds
    with the std as error bars, joined in lr order; the base model as a grey cross."""
    names = list(summary["frontier"])
    fig, axes = _figure(len(names), (4.6 * len(names), 4.4))
    base = summary["base"]["test"]
    for ax, name in zip(axes[0], names):
        for method, runs in summary["frontier"][name].items():
            lrs = sorted({r["lr"] for r in runs})
            pts = []
            for lr in lrs:
                at = [r for r in runs if r["lr"] == lr and r["CHAIR_i"] is not None]
                if at:
                    pts.append(
                        [statistics.fmean(r[k] for r in at) for k in ("recall", "CHAIR_i")]
                        + [statistics.pstdev(r[k] for r in at) for k in ("recall", "CHAIR_i")]
                    )
            if pts:
                xs, ys, ex, ey = zip(*pts)
                ax.errorbar(
                    xs,
                    ys,
                    xerr=ex,
                    yerr=ey,
                    marker="o",
                    ms=3,
                    lw=1,
                    capsize=2,
                    color=COLOURS.get(method, "k"),
                    label=method,
                )
        ax.plot([base["recall"]], [base["CHAIR_i"]], "x", color=COLOURS["base"], ms=8, label="base")
        ax.set_title(summary["regimes"][name]["title"], fontsize=9)
        ax.set_xlabel("recall (%) →  better")
        ax.set_ylabel("CHAIR_i (%) ↓  better")
    _legend(fig, axes[0])
    _save(fig, path)


def regime_verdicts(summary: dict[str, Any]) -> dict[str, str]:
    """Per regime, the frontier verdict of DAMA against DPO: computed from the matched-recall interval, and only
    where the regime's validity checks hold."""
    out = {}
    for name, regime in summary["regimes"].items():
        failed = [c for c, check in regime["validity"].items() if not check["ok"]]
        if failed:
            out[name] = "No verdict: not a valid testbed in this regime — failed checks: " + ", ".join(failed) + "."
        elif "DAMA" not in summary["matched_recall"][name]:
            out[name] = "No verdict: DAMA was not run in this regime."
        else:
            out[name] = matched_recall_outcome(summary["matched_recall"][name]["DAMA"], "DAMA") + "."
    return out


def verdict(summary: dict[str, Any]) -> str:
    """The single-point rule's sentence for the primary regime (kept as one labelled row of the report)."""
    failed = [name for name, check in summary["validity"].items() if not check["ok"]]
    if failed:
        return (
            "No verdict: this run is not a valid testbed for comparing DAMA with DPO — failed checks: "
            + ", ".join(failed)
            + "."
        )
    diff = summary["comparison"]["DAMA"]
    ci, recall = diff["CHAIR_i"], diff["recall"]
    if ci["low"] is None:
        return "No verdict: one seed gives no interval (run more seeds)."
    interval = (
        f"DAMA − DPO CHAIR_i {_interval(ci)} points, recall {_interval(recall)} (95% paired t-interval, "
        f"{ci['n']} seeds)"
    )
    if ci["high"] < 0:
        outcome = "DAMA hallucinates less than DPO"
        if recall["high"] is not None and recall["high"] < 0:
            outcome += ", but it also recalls fewer objects"
    elif ci["low"] > 0:
        outcome = "DAMA hallucinates more than DPO"
    else:
        outcome = "DAMA and DPO cannot be told apart on CHAIR_i at this power (the interval contains 0)"
    return f"{outcome}: {interval}."


def _mean_std(values: list[float | None], digits: int = 1) -> str:
    clean = [v for v in values if v is not None]
    if not clean:
        return "n/a"
    sd = statistics.stdev(clean) if len(clean) > 1 else 0.0
    return f"{statistics.fmean(clean):.{digits}f} ± {sd:.{digits}f}"


def _regime_section(summary: dict[str, Any], name: str) -> list[str]:
    """One regime: its grid, verdict, frontier, matched-recall and equal-lr tables, the single-point row, epochs."""
    regime, frontier = summary["regimes"][name], summary["frontier"][name]
    lines = _grid_lines(regime)
    lines += [
        "",
        f"**Verdict at matched recall.** {regime_verdicts(summary)[name]}",
        "",
        *_frontier_table(frontier, summary["conservative_point"]),
        "",
        *_matched_recall_table(summary["matched_recall"][name]),
        "",
        *_equal_lr_table(regime),
        "",
        *_single_point_table(regime),
        *_epoch_table(regime, frontier),
        "",
    ]
    return lines


def _grid_lines(regime: dict[str, Any]) -> list[str]:
    """The schedule and how the grid was fixed (with DPO's pilot table when a pilot ran)."""
    lines = [f"## Regime {regime['title']}", "", f"Schedule: {regime['description']}. "]
    if not regime["pilot"]:
        lines[-1] += f"Grid {regime['grid']} fixed in the preset."
        return lines
    lines[-1] += (
        f"Grid {[float(f'{g:.3g}') for g in regime['grid']]} fixed from DPO's pilot (first seed, "
        f"validation images) before any other method ran: knee {regime['knee']:.3g} (the smallest pilot "
        "lr whose CHAIR_i drop is at least half the largest), grid knee · 2^(j/2), "
        f"j = −{len(regime['grid']) // 2}…{len(regime['grid']) // 2}."
    )
    lines += ["", "| pilot lr (DPO) | val CHAIR_i | val recall |", "| --- | --- | --- |"]
    lines += [f"| {float(lr):.3g} | {_num(v['CHAIR_i'])} | {_num(v['recall'])} |" for lr, v in regime["pilot"].items()]
    return lines


def _table_head(caption: str, columns: list[str]) -> list[str]:
    """A caption, a blank line and a markdown table's header rows."""
    return [caption, "", "| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]


def _frontier_table(frontier: dict[str, list[dict]], point: float) -> list[str]:
    lines = _table_head(
        "Frontier on the test images (mean ± std over seeds; β_C·h of fixed easy / hard pairs at the end, and the "
        f"share past {point:.2f}, where a larger β starts to slow a pair down):",
        ["method", "lr", "CHAIR_i", "CHAIR_s", "recall", "β_C·h easy", "β_C·h hard", "easy past", "hard past"],
    )
    for method, runs in frontier.items():
        for lr in sorted({r["lr"] for r in runs}):
            at = [r for r in runs if r["lr"] == lr]
            lines.append(
                f"| {method} | {lr:.3g} | {_mean_std([r['CHAIR_i'] for r in at])} | "
                f"{_mean_std([r['CHAIR_s'] for r in at])} | {_mean_std([r['recall'] for r in at])} | "
                f"{_mean_std([r['beta_h_easy'] for r in at], 2)} | {_mean_std([r['beta_h_hard'] for r in at], 2)} | "
                f"{_pct([r['share_past_easy'] for r in at])} | {_pct([r['share_past_hard'] for r in at])} |"
            )
    return lines


def _matched_recall_table(matched: dict[str, dict]) -> list[str]:
    lines = _table_head(
        "Method − DPO CHAIR_i at matched recall (paired by seed, 95% t-interval):",
        ["method", "common recall range", "overall", "per recall"],
    )
    for method, m in matched.items():
        if not m["overlap"]:
            lines.append(f"| {method} | none: the frontiers do not overlap | n/a | |")
            continue
        per = "; ".join(
            f"{r:.1f}: {interval_text({'mean': mu, 'low': lo, 'high': hi})}"
            for r, mu, lo, hi in zip(m["recalls"], m["mean"], m["low"], m["high"])
        )
        lines.append(f"| {method} | {m['range'][0]:.1f}–{m['range'][1]:.1f} | {_interval(m['overall'])} | {per} |")
    return lines


def _equal_lr_table(regime: dict[str, Any]) -> list[str]:
    lines = _table_head("Method − DPO at equal learning rate (paired by seed):", ["method", "lr", "CHAIR_i", "recall"])
    for method, rows in regime["equal_lr"].items():
        lines += [
            f"| {method} | {row['lr']:.3g} | {_interval(row['CHAIR_i'])} | {_interval(row['recall'])} |"
            for row in rows
        ]
    return lines


def _single_point_table(regime: dict[str, Any]) -> list[str]:
    lines = _table_head(
        "Single-point rule (labelled row; the earlier protocol): per method the lr of the grid with the "
        "lowest validation CHAIR_i among those with validation recall ≥ 0.9 × base (first seed), then every "
        "seed at it on the test images:",
        ["method", "lr", "CHAIR_i", "recall", "− DPO CHAIR_i", "− DPO recall"],
    )
    for method, sp in regime["single_point"].items():
        row = regime["table"][method]
        diff = regime["comparison"].get(method)
        lines.append(
            f"| {method} | {sp['lr']:.3g} | {_fmt(row['CHAIR_i'])} | {_fmt(row['recall'])} | "
            f"{_interval(diff['CHAIR_i']) if diff else '—'} | {_interval(diff['recall']) if diff else '—'} |"
        )
    return lines


def _epoch_table(regime: dict[str, Any], frontier: dict[str, list[dict]]) -> list[str]:
    """Validation CHAIR_i / recall after each epoch at the tracked lr (epoch regimes only; else no lines)."""
    epochs = {
        m: [r for r in runs if r["val_epochs"] and r["lr"] == regime["track_lr"]] for m, runs in frontier.items()
    }
    if not any(epochs.values()):
        return []
    n_epochs = len(next(v for v in epochs.values() if v)[0]["val_epochs"])
    lines = [
        "",
        f"Validation CHAIR_i / recall after each epoch at lr {regime['track_lr']:.3g} (mean over seeds):",
        "",
        "| method | " + " | ".join(f"epoch {k + 1}" for k in range(n_epochs)) + " |",
        "| --- |" + " --- |" * n_epochs,
    ]
    for method, runs in epochs.items():
        if runs:
            cells = [
                f"{_num(statistics.fmean(r['val_epochs'][k]['CHAIR_i'] for r in runs))} / "
                f"{_num(statistics.fmean(r['val_epochs'][k]['recall'] for r in runs))}"
                for k in range(len(runs[0]["val_epochs"]))
            ]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def _pct(values: list[float | None]) -> str:
    clean = [v for v in values if v is not None]
    return "n/a" if not clean else f"{100 * statistics.fmean(clean):.0f}%"


PLOTS = {
    "frontier.png": plot_frontiers,
    "results.png": plot_results,
    "beta_vs_delta.png": plot_beta_vs_delta,
    "model_aware.png": plot_model_aware,
    "responsiveness.png": plot_responsiveness,
}


def write_report(summary: dict[str, Any], out: Path, command: str, wall_seconds: float) -> Path:
    """Write report.md and the PNG plots into `out`; returns the report's path."""
    for name, plot in PLOTS.items():
        plot(summary, out / name)
    lines = _header_section(summary, command, wall_seconds) + _validity_section(summary)
    for name in summary["regimes"]:
        lines += _regime_section(summary, name)
    lines += _plots_and_timings_section(summary, wall_seconds)
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _header_section(summary: dict[str, Any], command: str, wall_seconds: float) -> list[str]:
    """The command, the machine, the verdict of every regime and the frontier figure."""
    store = summary["store"]
    verdicts = regime_verdicts(summary)
    return [
        "# dama demo — DPO vs DAMA in a synthetic visual world",
        "",
        f"Command: `{command}` — {wall_seconds / 60:.1f} min on {platform.machine()} "
        f"({cpu_name()}, {usable_cpus()} cores), Python {platform.python_version()}, {_models_source(summary)}; "
        f"{store['runs']} runs, {store['runs_reused']} of them from the run store{_workers(summary)}.",
        "",
        "**Verdict per regime** (DAMA − DPO CHAIR_i along the two learning-rate frontiers, at matched recall):",
        "",
        *[f"- {summary['regimes'][name]['title']}: {text}" for name, text in verdicts.items()],
        "",
        "Methods: " + ", ".join(summary["methods"]) + ".",
        "",
        "![frontiers](frontier.png)",
        "",
    ]


def _models_source(summary: dict[str, Any]) -> str:
    """Where the world's models came from (results.json before the shipped models: the build time says)."""
    models = summary.get("models")
    if models is None:
        return "from " + ("a warm model cache" if summary["timings"]["models"] < 5 else "an empty model cache")
    built_on = (models.get("built_on") or {}).get("cpu")
    where = f", built on {built_on}" if built_on else ""
    return {
        "shipped": f"with the world's shipped models{where}",
        "cache": f"with the world's models from the cache{where}",
        "built": "with the world's models trained by this run (an empty cache)",
    }.get(models["source"], f"with the world's models ({models['source']}{where})")


def _workers(summary: dict[str, Any]) -> str:
    workers = summary.get("workers")
    if not workers or workers["processes"] == 1:
        return ""
    return f", {workers['processes']} side by side ({workers['threads_per_run']} thread each)"


def _validity_section(summary: dict[str, Any]) -> list[str]:
    """The testbed's checks, the pairs, the hardness signal and the base model."""
    cfg = summary["config"]
    balance, signal = summary["length_balance"], summary["hardness_signal"]
    return [
        f"## Is this a valid testbed? (checks of the primary regime, {summary['regimes'][_primary(summary)]['title']})",
        "",
        "| check | value | rule | ok |",
        "| --- | --- | --- | --- |",
        *[f"| {name} | {_num(c['value'], 2 if name.startswith('corr') else 1)} | {c['rule']} | "
          f"{'yes' if c['ok'] else '**no**'} |"
          for name, c in summary["validity"].items()],
        "",
        f"Preference pairs: {summary['n_pairs']}, sampled from the base model and labelled against ground truth; "
        f"chosen {balance['chosen_words']:.1f} vs rejected {balance['rejected_words']:.1f} words on average, "
        f"corr(label gap, length difference) = {balance['corr_gap_length_difference']:+.2f}. "
        f"Label gaps: {_histogram(summary['pair_gaps'])}.",
        "",
        "Hardness δ (`dama hardness`, the world's CLIP): "
        + "; ".join(f"`{name}`: corr(δ, gap) = {v['corr_gap']:+.2f}, corr(δ, length difference) = "
                    f"{v['corr_length_difference']:+.2f}, δ > 0 for {100 * v['positive_fraction']:.0f}% of pairs"
                    for name, v in signal.items())
        + f". Training uses `union_softmax` (the paper's Eq. 3–5), δ̄ = {summary['delta_mean']:.4f}.",
        "",
        f"Base model on {cfg['n_eval_images']} test images: CHAIR_i {_num(summary['base']['test']['CHAIR_i'])}, "
        f"CHAIR_s {_num(summary['base']['test']['CHAIR_s'])}, recall {_num(summary['base']['test']['recall'])}; "
        f"seeds {list(cfg['seeds'])}, paired (same data order and initial model).",
        "",
    ]  # fmt: skip


def _plots_and_timings_section(summary: dict[str, Any], wall_seconds: float) -> list[str]:
    return [
        "## Plots",
        "",
        "Single-point rule, primary regime: ![results](results.png)",
        "",
        "β_C against δ: ![beta](beta_vs_delta.png)",
        "",
        "α_M and R̄ over training: ![model-aware](model_aware.png)",
        "",
        "Reward margin of easy and hard pairs during DPO and DAMA training (the paper's 'imbalanced "
        "responsiveness'), easy/hard by the ground-truth gap and by δ, at the grid's middle lr: "
        "![responsiveness](responsiveness.png)",
        "",
        "## Timings (s)",
        "",
        *[f"- {k}: {v:.0f}" for k, v in summary["timings"].items()],
        f"- total: {wall_seconds:.0f}",
        "",
        "Raw numbers: `results.json` (fields: docs/demo.md).",
    ]


def _num(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _histogram(values: list[int]) -> str:
    counts: dict[int, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return ", ".join(f"{k}: {n}" for k, n in sorted(counts.items()))
