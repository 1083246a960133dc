"""Step time of DAMA vs DPO vs TRL's DPOTrainer, and a precomputed vs resident reference model, side by side.

    python -m benchmarks.train_step [--model {tiny,50m,llava576,all}] [--steps N] [--reps 7] [--device {auto,cpu,cuda}]
                                    [--variants A,B] [--json OUT] [--skip-memory] [--threads N]
                                    [--profile [--profile-variant V]]

Variants (same model built from seed 0, same data, batch, seed and batch order):
    dama               DAMATrainer, data_aware + model_aware + keep_ratio 0.8, reference model resident
    dpo                DAMATrainer with all three off (TRL's sigmoid DPO through our `_compute_loss`)
    trl                TRL's own DPOTrainer
    dama_precomputed   as `dama`, with precompute_ref_log_probs=True: the policy at init gives the reference log-probs
                       in one pass over the data, and training runs without any reference model
    dama_prefix, dama_precomputed_prefix
                       as `dama` / `dama_precomputed` with prefix_sharing: each pair's image and prompt go through the
                       model once for both answers (`dama.prefix`); the first four keep it off

Models: `tiny` and `50m` (short synthetic pairs; default variants dama, dpo, trl, dama_precomputed) and `llava576`, the
LLaVA-1.5-shaped workload (576 image tokens, ~50-token question, answers of ~120 tokens with a long tail; default
variants trl, dama_precomputed, dama_precomputed_prefix). Every variant is also costed by the tokens it computes
(padded rows, or packed rows with prefix sharing; forward = 1, backward = 2 units per token): the ratio of those costs
is the arithmetic lower bound printed next to each measured ratio.

Each repetition builds every variant afresh and runs `trainer.train()` for 1 + --steps optimizer steps, in an order
that rotates from one repetition to the next, so machine noise hits all variants alike. The first step of every call is discarded
(it allocates the optimizer state); the time of a step is on_step_begin → on_step_end: forward, backward, gradient
clipping, optimizer and scheduler (collation and logging are timed separately as "iteration"). The reported value of
a variant is the median over repetitions of its per-repetition mean step time, with the IQR and min–max; ratios are
taken per repetition (variants of one repetition ran back to back) and summarised the same way.

Peak memory of every variant of the run is measured in its own fresh subprocess (peak RSS on CPU: VmHWM, because
Linux hands a child the parent's `ru_maxrss`; `torch.cuda.max_memory_allocated` of training on CUDA) so one variant's
peak cannot hide another's.

On CUDA the same command runs in bf16 with gradient checkpointing and SDPA attention; tokens/s and peak memory are
reported for every variant.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from typing import Any

import torch
from transformers import TrainerCallback

from benchmarks._common import (
    DEFAULT_STEPS,
    DEFAULT_VARIANTS,
    MODELS,
    VARIANTS,
    Spread,
    StepTimer,
    build_model,
    build_trainer,
    count_tokens,
    current_rss_bytes,
    machine,
    make_data,
    param_bytes,
    param_count,
    peak_rss_bytes,
    print_machine,
    resolve_device,
)

BATCH_PAIRS = 4
N_PAIRS = 16
MEMORY_MARK = "MEMORY-JSON "
# (name, numerator variant, denominator variant, target, "le" when the ratio must not exceed the target)
RATIOS: tuple[tuple[str, str, str, float | None], ...] = (
    ("DAMA / DPO (our trainer)", "dama", "dpo", 1.03),
    ("DPO ours / TRL DPOTrainer", "dpo", "trl", 1.02),
    ("DAMA precomputed ref / resident ref", "dama_precomputed", "dama", 0.80),
    ("DAMA precomputed ref + prefix sharing / TRL DPOTrainer", "dama_precomputed_prefix", "trl", 0.50),
    ("DAMA precomputed ref / TRL DPOTrainer", "dama_precomputed", "trl", None),
    ("prefix sharing / unshared (both precomputed)", "dama_precomputed_prefix", "dama_precomputed", None),
    ("prefix sharing / unshared (both resident)", "dama_prefix", "dama", None),
)
# entries of `token_accounting`
REAL, PADDED, PACKED_REAL, PACKED_PADDED = range(4)


def computed_units(variant: str, accounting: list[float]) -> float:
    """Cost of one step in token units: 3 per policy token (forward + backward), 1 per reference-forward token.

    The tokens are those the forward computes: padded unshared rows, or the padded packed rows with prefix sharing.
    """
    _, switches, precompute = VARIANTS[variant]
    tokens = accounting[PACKED_PADDED] if switches.get("prefix_sharing") else accounting[PADDED]
    return 3 * tokens + (0 if precompute else tokens)


def time_variants(model_name: str, device: str, steps: int, reps: int, variants: list[str]) -> dict[str, Any]:
    """Interleaved step times of every variant on one model; returns raw times and their summaries.

    Every repetition builds every variant afresh (outside the timed steps): all start from the same weights, and a
    variant is not tied to one memory layout for the whole run, which on the tiny model shifted one instance's step
    time by ~10% against another's of the same variant.
    """
    data = make_data(model_name, N_PAIRS)
    model = build_model(model_name, device)[0]
    result: dict[str, Any] = {
        "model": model_name,
        "params": param_count(model),
        "param_bytes": param_bytes(model),
        "batch_pairs": BATCH_PAIRS,
        "steps_per_rep": steps,
        "reps": reps,
        "variants": {
            v: {"step_s": [], "iteration_s": [], "tokens": [], "accounting": [], "build_s": []} for v in variants
        },
    }
    del model
    names = list(variants)
    for rep in range(reps):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for variant in order:
            timer = StepTimer()
            started = time.perf_counter()
            trainer = build_trainer(variant, model_name, device, data, BATCH_PAIRS, 1 + steps, callbacks=[timer])
            built = time.perf_counter() - started
            counts = count_tokens(trainer)
            trainer.train()
            record = result["variants"][variant]
            record["build_s"].append(built)
            record["step_s"].append(timer.steps[1:])  # the first step allocates the optimizer state: warm-up
            record["iteration_s"].append(timer.iterations[1:])
            accounting = [c.tolist() for c in counts[1:]]
            record["tokens"].append([a[REAL] for a in accounting])
            record["accounting"].append(accounting)
            del trainer
            gc.collect()
        line = "  ".join(f"{v} {sum(result['variants'][v]['step_s'][-1]) / steps:.3f}" for v in names)
        print(f"  rep {rep + 1}/{reps} ({' → '.join(order)}): mean step s  {line}", flush=True)
    for record in result["variants"].values():
        per_rep = [sum(times) / len(times) for times in record["step_s"]]
        record["per_rep_step_s"] = per_rep
        record["summary"] = vars(Spread.of(per_rep))
        tokens_per_s = [sum(t) / sum(s) for t, s in zip(record["tokens"], record["step_s"])]
        record["tokens_per_s"] = vars(Spread.of(tokens_per_s))
        steps_acc = [a for rep_acc in record["accounting"] for a in rep_acc]
        record["tokens_per_step"] = {
            name: sum(a[i] for a in steps_acc) / len(steps_acc)
            for i, name in enumerate(("real", "padded", "packed_real", "packed_padded"))
        }
    result["ratios"] = {}
    for name, num, den, target in RATIOS:
        if num not in variants or den not in variants:
            continue
        per_rep = [
            a / b for a, b in zip(result["variants"][num]["per_rep_step_s"], result["variants"][den]["per_rep_step_s"])
        ]
        spread = Spread.of(per_rep)
        of_medians = result["variants"][num]["summary"]["median"] / result["variants"][den]["summary"]["median"]
        # the same batches in the same order for every variant: the bound is a ratio of summed step costs
        batches = [a for rep_acc in result["variants"][den]["accounting"] for a in rep_acc]
        bound = sum(computed_units(num, a) for a in batches) / sum(computed_units(den, a) for a in batches)
        result["ratios"][name] = {
            "per_rep": per_rep,
            "summary": vars(spread),
            "of_medians": of_medians,
            "target": target,
            "met": None if target is None else spread.median <= target,
            "token_bound": bound,
        }
    return result


def memory_child(variant: str, model_name: str, device: str, steps: int) -> None:
    """Run one variant for a few steps in this (fresh) process and print its peak memory as one JSON line."""
    data = make_data(model_name, N_PAIRS)
    trainer = build_trainer(variant, model_name, device, data, BATCH_PAIRS, steps)
    rss_after_init = current_rss_bytes()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    report = {
        "variant": variant,
        "peak_rss_bytes": peak_rss_bytes(),
        "rss_after_init_bytes": rss_after_init,
        "rss_end_bytes": current_rss_bytes(),
        "ref_model_resident": trainer.ref_model is not None,
        "model_param_bytes": param_bytes(trainer.model),
    }
    if device == "cuda":
        report["peak_gpu_bytes"] = torch.cuda.max_memory_allocated()
    print(MEMORY_MARK + json.dumps(report), flush=True)


def measure_memory(model_name: str, device: str, steps: int, variants: list[str]) -> dict[str, Any]:
    """Peak memory of every variant of the run, each in its own fresh subprocess.

    On CUDA the peak is that of training (reset after init): resident weights, optimizer state and activations. On
    CPU it is the process's peak RSS, init (and the reference pass of precomputed variants) included.
    """
    reports = {}
    for variant in variants:
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.train_step",
            "--_memory-child",
            variant,
            "--model",
            model_name,
            "--device",
            device,
            "--steps",
            str(steps),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        lines = [line for line in done.stdout.splitlines() if line.startswith(MEMORY_MARK)]
        if done.returncode != 0 or not lines:
            raise RuntimeError(f"memory run of {variant} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        reports[variant] = json.loads(lines[-1][len(MEMORY_MARK) :])
    key = "peak_gpu_bytes" if device == "cuda" else "peak_rss_bytes"
    memory: dict[str, Any] = {"metric": key, "reports": reports}
    if "dama" in reports and "dama_precomputed" in reports:
        live, stored = reports["dama"], reports["dama_precomputed"]
        memory.update(
            resident_ref=live[key],
            precomputed_ref=stored[key],
            drop=live[key] - stored[key],
            ref_model_param_bytes=live["model_param_bytes"],
        )
    return memory


class _ProfileIterations(TrainerCallback):
    """Profile iteration 2 (collation, step, logging) with torch.profiler and iteration 3 with cProfile."""

    def __init__(self, top: int) -> None:
        self.top = top
        self.torch_profile: Any = None
        self.python_profile: Any = None

    def on_step_end(self, args, state, control, **kwargs):
        import cProfile
        import pstats

        if state.global_step == 1:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if torch.cuda.is_available():
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self.torch_profile = torch.profiler.profile(activities=activities)
            self.torch_profile.__enter__()
        elif state.global_step == 2:
            self.torch_profile.__exit__(None, None, None)
            self.python_profile = cProfile.Profile()
            self.python_profile.enable()
        elif state.global_step == 3:
            self.python_profile.disable()
            print(self.torch_profile.key_averages().table(sort_by="self_cpu_time_total", row_limit=self.top))
            pstats.Stats(self.python_profile).sort_stats("cumulative").print_stats(self.top)


def profile_dama_step(model_name: str, device: str, top: int = 25, variant: str = "dama") -> None:
    """Top costs of one training iteration of `variant`: torch ops by self time, then Python functions by cumulative
    time."""
    trainer = build_trainer(
        variant,
        model_name,
        device,
        make_data(model_name, N_PAIRS),
        BATCH_PAIRS,
        3,
        callbacks=[_ProfileIterations(top)],
    )
    trainer.train()


def mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def print_result(result: dict[str, Any], device: str) -> None:
    print(
        f"\n### {result['model']}: {result['params'] / 1e6:.2f} M parameters ({mib(result['param_bytes'])}), "
        f"batch {result['batch_pairs']} pairs, {result['reps']} reps × {result['steps_per_rep']} timed steps\n"
    )
    memory = result.get("memory") or {"reports": {}}
    what = "peak GPU memory allocated" if memory.get("metric") == "peak_gpu_bytes" else "peak RSS (VmHWM)"
    print(
        f"| variant | step time, ms: median [IQR, min–max] | iteration incl. collation+logging, ms (median) "
        f"| tokens/s (median) | tokens computed per step | {what} |"
    )
    print("|---|---|---|---|---|---|")
    for variant, record in result["variants"].items():
        iterations = [t for times in record["iteration_s"] for t in times]
        iteration = Spread.of(iterations).median * 1e3 if iterations else float("nan")
        per_step = record["tokens_per_step"]
        computed = per_step["packed_padded"] if VARIANTS[variant][1].get("prefix_sharing") else per_step["padded"]
        report = memory["reports"].get(variant)
        peak = mib(report[memory["metric"]]) if report else "—"
        print(
            f"| {variant} | {Spread(**record['summary']).fmt(1e3)} | {iteration:.1f} "
            f"| {record['tokens_per_s']['median']:.0f} | {computed:.0f} | {peak} |"
        )
    per_step = next(iter(result["variants"].values()))["tokens_per_step"]
    print(
        f"\nper step (mean over timed steps): {per_step['real']:.0f} real tokens in the collated rows, "
        f"{per_step['padded']:.0f} with padding; packed with prefix sharing {per_step['packed_real']:.0f} real, "
        f"{per_step['packed_padded']:.0f} with padding"
    )
    print(
        "\n| ratio of step times | median of per-rep ratios [IQR, min–max] | ratio of medians "
        "| arithmetic lower bound (token units) | target | met |"
    )
    print("|---|---|---|---|---|---|")
    for name, ratio in result["ratios"].items():
        target = "—" if ratio["target"] is None else f"≤ {ratio['target']:.2f}"
        met = "—" if ratio["met"] is None else ("yes" if ratio["met"] else "**no**")
        print(
            f"| {name} | {Spread(**ratio['summary']).fmt(digits=3)} | {ratio['of_medians']:.3f} "
            f"| {ratio['token_bound']:.3f} | {target} | {met} |"
        )
    if "drop" in memory:
        print(
            f"\n{what}: resident reference {mib(memory['resident_ref'])}, precomputed {mib(memory['precomputed_ref'])}"
            f", drop {mib(memory['drop'])}; reference model parameters {mib(memory['ref_model_param_bytes'])}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=[*MODELS, "all"], default="all")
    parser.add_argument("--steps", type=int, help=f"timed optimizer steps per repetition and variant {DEFAULT_STEPS}")
    parser.add_argument("--reps", type=int, default=7, help="interleaved repetitions")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument(
        "--variants",
        type=lambda text: text.split(","),
        help=f"comma-separated subset of {','.join(VARIANTS)} (default per model: {DEFAULT_VARIANTS})",
    )
    parser.add_argument("--json", metavar="OUT", help="write all raw times and summaries to this JSON file")
    parser.add_argument("--skip-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--memory-steps", type=int, default=3, help="optimizer steps of each memory subprocess")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice, one per core)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="instead of timing: profile one iteration (torch.profiler, then cProfile)",
    )
    parser.add_argument(
        "--profile-variant",
        default="dama",
        choices=list(VARIANTS),
        help="the variant --profile profiles (default dama)",
    )
    parser.add_argument("--_memory-child", dest="memory_child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = sorted(set(args.variants or []) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # inherited by the memory subprocesses
    if args.memory_child:
        memory_child(args.memory_child, args.model, device, args.steps)
        return

    info = machine()
    print_machine(info)
    if args.profile:
        for model_name in list(MODELS) if args.model == "all" else [args.model]:
            print(f"\n== profile of one {args.profile_variant} iteration: {model_name} ({device}) ==", flush=True)
            profile_dama_step(model_name, device, variant=args.profile_variant)
        return
    results = []
    for model_name in list(MODELS) if args.model == "all" else [args.model]:
        print(f"\n== {model_name} ({device}) ==", flush=True)
        variants = args.variants or DEFAULT_VARIANTS[model_name]
        result = time_variants(model_name, device, args.steps or DEFAULT_STEPS[model_name], args.reps, variants)
        if not args.skip_memory:
            print(f"  peak memory: {', '.join(variants)}, each in a fresh subprocess ...", flush=True)
            result["memory"] = measure_memory(model_name, device, args.memory_steps, variants)
        results.append(result)
        print_result(result, device)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"machine": info, "device": device, "results": results}, handle, indent=1)
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
