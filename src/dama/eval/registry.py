"""Every benchmark of `dama eval`, one line each: the `--bench` choices of `generate` and `score` come from here.

Order matters only for help texts and error messages. To add a benchmark, write its record (`dama.eval.benchmark
.Benchmark`) in its module and add one line below (docs/eval.md, "Adding a benchmark").
"""

from __future__ import annotations

from dama.eval import amber, judged, object_halbench, pope
from dama.eval.benchmark import GENERIC, Benchmark

BENCHMARKS: dict[str, Benchmark] = {
    benchmark.name: benchmark
    for benchmark in (
        object_halbench.CHAIR,
        object_halbench.OBJECT_HALBENCH,
        amber.AMBER,
        amber.AMBER_G,
        amber.AMBER_D,
        pope.POPE,
        judged.MMHAL,
        judged.LLAVA_BENCH,
        judged.MMVET,
        GENERIC,
    )
}


def generate_names() -> list[str]:
    """The benchmarks `dama eval generate` answers."""
    return [name for name, benchmark in BENCHMARKS.items() if benchmark.generates]


def score_names() -> list[str]:
    """The benchmarks `dama eval score` scores."""
    return [name for name, benchmark in BENCHMARKS.items() if benchmark.scores]
