"""What DAMA's per-step gather costs with 2 data-parallel CPU processes (gloo), next to the step it sits in.

    python -m benchmarks.gather_overhead [--model {tiny,50m}] [--steps N] [--reps 7] [--calls 500] [--json OUT]

Launches 2 processes with `torch.distributed.run` on 127.0.0.1 (1 thread each). In each, two trainers on the same
model and data: `dama` (DAMATrainer, DAMA on: `_dama_beta` gathers every rank's (R_i, α_D,i) every step) and `dpo`
(DAMATrainer, DAMA off: no gather in `_dama_beta`). Both gather their metrics once per step in `_log_step_metrics`,
and DDP all-reduces the gradients in both.

Reports, from rank 0:
  1. step time of dama and dpo, interleaved over repetitions, and the per-repetition ratio dama / dpo;
  2. `trainer.accelerator.gather` of a (B, 2) float tensor timed alone (after a barrier, --calls times), and that time
     divided by the dpo step time: the share of a step the gather can take.
The tiny model is the default because it is the hard case: the shorter the step, the larger a fixed gather's share.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import socket
import subprocess
import sys
import time
from typing import Any

from benchmarks._common import (
    DEFAULT_STEPS,
    MODELS,
    Spread,
    StepTimer,
    build_trainer,
    machine,
    make_pairs,
    param_count,
    print_machine,
)

BATCH_PAIRS = 4  # per process
RESULT_MARK = "GATHER-JSON "


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def time_gather(accelerator: Any, shape: tuple[int, ...], calls: int) -> list[float]:
    """Seconds per `accelerator.gather` call of a float tensor of `shape`, each call timed on its own."""
    import torch

    tensor = torch.randn(*shape)
    for _ in range(20):
        accelerator.gather(tensor)
    accelerator.wait_for_everyone()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        accelerator.gather(tensor)
        times.append(time.perf_counter() - start)
    return times


def worker(model_name: str, steps: int, reps: int, calls: int) -> None:
    data = make_pairs(8 * BATCH_PAIRS)
    names = ("dama", "dpo")
    step_s: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps):
        for name in names if rep % 2 == 0 else names[::-1]:
            timer = StepTimer()  # fresh trainers every repetition, as in train_step.py
            trainer = build_trainer(name, model_name, "cpu", data, BATCH_PAIRS, 1 + steps, callbacks=[timer])
            trainer.train()
            timed = timer.steps[1:]  # the first step of a call is warm-up
            step_s[name].append(sum(timed) / len(timed))
            accelerator, params = trainer.accelerator, param_count(trainer.model)
            del trainer
            gc.collect()
        if accelerator.is_main_process:
            print(
                f"  rep {rep + 1}/{reps}: dama {step_s['dama'][-1] * 1e3:.1f} ms  dpo {step_s['dpo'][-1] * 1e3:.1f} ms",
                flush=True,
            )
    gather_pairs = time_gather(accelerator, (BATCH_PAIRS, 2), calls)
    gather_metrics = time_gather(accelerator, (1, 21), calls)
    if accelerator.is_main_process:
        result = {
            "model": model_name,
            "params": params,
            "world_size": accelerator.num_processes,
            "batch_pairs_per_process": BATCH_PAIRS,
            "steps_per_rep": steps,
            "reps": reps,
            "step_s": step_s,
            "gather_pairs_s": gather_pairs,
            "gather_metrics_s": gather_metrics,
        }
        print(RESULT_MARK + json.dumps(result), flush=True)


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    dama, dpo = result["step_s"]["dama"], result["step_s"]["dpo"]
    ratio = Spread.of([a / b for a, b in zip(dama, dpo)])
    gather = Spread.of(result["gather_pairs_s"])
    metrics = Spread.of(result["gather_metrics_s"])
    dpo_step = Spread.of(dpo)
    return {
        "dama_step": vars(Spread.of(dama)),
        "dpo_step": vars(dpo_step),
        "dama_over_dpo": vars(ratio),
        "gather_pairs": vars(gather),
        "gather_metrics": vars(metrics),
        "gather_over_step": gather.median / dpo_step.median,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=list(MODELS), default="tiny")
    parser.add_argument("--steps", type=int, help=f"timed optimizer steps per repetition and variant {DEFAULT_STEPS}")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--calls", type=int, default=500, help="gather calls timed in isolation")
    parser.add_argument("--json", metavar="OUT")
    parser.add_argument("--_worker", dest="worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    steps = args.steps or DEFAULT_STEPS[args.model]
    if args.worker:
        worker(args.model, steps, args.reps, args.calls)
        return

    info = machine()
    print_machine(info)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={free_port()}",
        "-m",
        "benchmarks.gather_overhead",
        "--_worker",
        "--model",
        args.model,
        "--steps",
        str(steps),
        "--reps",
        str(args.reps),
        "--calls",
        str(args.calls),
    ]
    print(f"launching: {' '.join(cmd[1:])}", flush=True)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("  rep "):
            print(line)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_MARK)]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"the 2-process run failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    result = json.loads(lines[-1][len(RESULT_MARK) :])
    summary = summarise(result)
    print(
        f"\n### gather overhead: {result['model']} ({result['params'] / 1e6:.2f} M parameters), "
        f"{result['world_size']} gloo processes × {result['batch_pairs_per_process']} pairs, "
        f"{result['reps']} reps × {result['steps_per_rep']} timed steps\n"
    )
    print("| quantity | median [IQR, min–max] |")
    print("|---|---|")
    print(f"| dama step, ms | {Spread(**summary['dama_step']).fmt(1e3)} |")
    print(f"| dpo step, ms | {Spread(**summary['dpo_step']).fmt(1e3)} |")
    print(f"| dama / dpo step (per-rep ratio) | {Spread(**summary['dama_over_dpo']).fmt(digits=3)} |")
    print(f"| gather of ({result['batch_pairs_per_process']}, 2), µs | {Spread(**summary['gather_pairs']).fmt(1e6)} |")
    print(f"| gather of the (1, 21) metrics vector, µs | {Spread(**summary['gather_metrics']).fmt(1e6)} |")
    print(f"| gather ({result['batch_pairs_per_process']}, 2) / dpo step | {summary['gather_over_step']:.2e} |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"machine": info, "result": result, "summary": summary}, handle, indent=1)
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
