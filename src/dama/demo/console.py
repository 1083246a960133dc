"""What `dama demo` prints: its own lines and one progress bar, without the libraries' bars and known warnings.

`quiet_libraries` is the demo's console: inside it, the progress bars of transformers ("Loading weights" on every
model load, "Writing model shards" on every save), huggingface_hub and datasets are off, and the known warnings of
the libraries under the demo (`KNOWN_WARNINGS`) are not shown. On exit every setting is as it was, so nothing else
(`dama train`, a notebook that runs the demo and then trains) loses its bars or warnings: the demo's entry point
(`dama.demo.cli.main`) is the only caller, and importing this module changes nothing.

`RunProgress` is the demo's one bar, over every alignment run (pilot, frontier grid, seeds), with the time left
estimated from the runs trained so far (`dama.demo.experiment.Study` computes it).
"""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

# (category, message regex) of the libraries' warnings that say nothing to a person watching the demo
KNOWN_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    # transformers 5 deprecates the property that TRL 1.16's DPOTrainer still reads on every model it prepares
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated"),
)


@contextmanager
def quiet_libraries() -> Iterator[None]:
    """The libraries' progress bars off and `KNOWN_WARNINGS` ignored inside; every setting restored on exit."""
    from transformers.utils import logging as transformers_logging

    # the modules, not the `tqdm` classes that `datasets.utils` and `huggingface_hub.utils` export under that name
    datasets_tqdm = importlib.import_module("datasets.utils.tqdm")
    hub_tqdm = importlib.import_module("huggingface_hub.utils.tqdm")

    transformers_on = transformers_logging.is_progress_bar_enabled()
    hub_states = dict(hub_tqdm.progress_bar_states)
    datasets_on = not datasets_tqdm.are_progress_bars_disabled()
    with warnings.catch_warnings():  # restores the warning filters on exit
        for category, message in KNOWN_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category)
        # a user who forces the bars on with HF_*_DISABLE_PROGRESS_BARS=0 keeps them, without a warning about it
        warnings.filterwarnings("ignore", message="Cannot disable progress bars", category=UserWarning)
        transformers_logging.disable_progress_bar()  # transformers' own bars, and huggingface_hub's
        hub_tqdm.disable_progress_bars()
        datasets_tqdm.disable_progress_bars()
        try:
            yield
        finally:
            if transformers_on:
                transformers_logging.enable_progress_bar()
            hub_tqdm.progress_bar_states.clear()  # transformers' enable/disable above touched these too
            hub_tqdm.progress_bar_states.update(hub_states)
            if datasets_on:
                datasets_tqdm.enable_progress_bars()


class RunProgress:
    """One bar over the demo's alignment runs: `done/total runs`, elapsed time, the estimated time left and the last
    run's result. Lines printed while it is shown go through `write`, above the bar."""

    def __init__(self, total: int) -> None:
        from tqdm.auto import tqdm

        self._tqdm = tqdm
        self.bar = tqdm(
            total=total,
            desc="[demo] runs",
            unit="run",
            file=sys.stderr,
            dynamic_ncols=True,
            bar_format="{desc} {n_fmt}/{total_fmt} |{bar:24}| {elapsed}{postfix}",
        )

    def set_total(self, total: int) -> None:
        """A new number of runs (once a regime's grid is fixed by its pilot)."""
        self.bar.total = max(total, self.bar.n)
        self.bar.refresh()

    def advance(self, eta_minutes: float | None, last: str) -> None:
        """One run more; `eta_minutes` is the time left (None until a run was trained), `last` the run's result."""
        left = "ETA …" if eta_minutes is None else f"ETA {eta_minutes:.1f} min"
        self.bar.set_postfix_str(f"{left} · {last}", refresh=False)
        self.bar.update(1)

    def write(self, line: str, log: Any = print) -> None:
        """Print `line` with `log` above the bar (the bar is cleared and drawn again below it)."""
        with self._tqdm.external_write_mode(file=sys.stderr):
            log(line)

    def close(self) -> None:
        self.bar.close()
