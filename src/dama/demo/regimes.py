"""Training regimes of the demo study and the rule that fixes each regime's learning-rate grid from DPO alone.

A regime is the schedule every method shares in it (docs/demo.md, "Regimes"):

- `short`: 150 constant-lr steps × batch 8, β 0.1 (about 1.1 epochs; the demo's original schedule);
- `official`: the official recipe's shape, 4 epochs over the pairs, cosine decay, warmup 0.1, global batch 16 (the
  N of the model-aware statistics), β 0.1, every epoch's model scored on the validation images;
- `margin`: the same schedule with β 1.0, a larger β being the means the paper's setting suggests for margins with
  β_C·h past `CONSERVATIVE_POINT`, where a larger β is more conservative.

The grid rule (`frontier_grid`), fixed before any method but DPO runs in a regime: DPO, first seed, is trained at
the pilot learning rates (a factor-2 ladder) and scored on the validation images. The *knee* is the smallest pilot
lr whose validation CHAIR_i drop from the base model is at least half the largest drop seen over the pilot; the
frontier grid is knee · 2^(j/2), j = −2 … 2 (five points, factor √2, from knee/2 to 2·knee). With no drop of at
least one point the knee is the largest pilot lr (DPO then does not work, and the validity checks say so).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


def _conservative_point() -> float:
    """The x > 0 with x·σ(x) = 1 (Newton's method). d/dβ [β·σ(−β·h)] = σ(−βh)·(1 − βh·σ(βh)): below this value of
    β·h a larger β makes a pair's gradient larger, above it smaller."""
    x = 1.0
    for _ in range(50):
        s = 1.0 / (1.0 + math.exp(-x))
        f, df = x * s - 1.0, s + x * s * (1.0 - s)
        x -= f / df
    return x


CONSERVATIVE_POINT = _conservative_point()  # ≈ 1.2785


@dataclass(frozen=True)
class Regime:
    """One schedule shared by every method: `steps` > 0 gives max_steps, else `epochs` passes over the pairs."""

    name: str
    title: str
    beta: float
    batch_size: int
    steps: int = 0
    epochs: float = 1.0
    scheduler: str = "constant"
    warmup: float = 0.0
    validate_every_epoch: bool = False

    def settings(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        length = f"{self.steps} steps" if self.steps else f"{self.epochs:g} epochs"
        warm = f", warmup {self.warmup:g}" if self.warmup else ""
        return f"{length} × batch {self.batch_size}, {self.scheduler} lr{warm}, β {self.beta:g}"


def regimes(short_steps: int = 150, short_batch: int = 8, epochs: float = 4.0, batch: int = 16) -> dict[str, Regime]:
    """The study's three regimes (module docstring); the arguments scale them for the quick and tiny presets."""
    return {
        "short": Regime("short", "(a) short: constant lr", 0.1, short_batch, steps=short_steps),
        "official": Regime(
            "official",
            "(b) official recipe's shape",
            0.1,
            batch,
            epochs=epochs,
            scheduler="cosine",
            warmup=0.1,
            validate_every_epoch=True,
        ),
        "margin": Regime(
            "margin",
            "(c) large margins: β 1.0",
            1.0,
            batch,
            epochs=epochs,
            scheduler="cosine",
            warmup=0.1,
            validate_every_epoch=True,
        ),
    }


def frontier_grid(pilot: dict[float, float], base_chair_i: float, points: int = 5) -> tuple[list[float], float]:
    """The frontier grid and its knee from DPO's pilot (lr → validation CHAIR_i) and the base model's CHAIR_i.

    `points` odd: knee · 2^(j/2) for j = −(points//2) … points//2 (module docstring)."""
    if not pilot:
        raise ValueError("the pilot has no learning rate")
    if points < 1:
        raise ValueError(f"points must be ≥ 1, got {points}")
    lrs = sorted(pilot)
    drops = {lr: base_chair_i - pilot[lr] for lr in lrs}
    largest = max(drops.values())
    knee = lrs[-1] if largest < 1.0 else next(lr for lr in lrs if drops[lr] >= 0.5 * largest)
    half = points // 2
    offsets = range(-half, half + 1) if points % 2 else range(-half, half)
    return [_round(knee * 2 ** (j / 2)) for j in offsets], knee


def _round(lr: float) -> float:
    """Three significant digits, so that the grid's lrs print and key the run store stably (4e-5·√2 = 5.66e-5)."""
    return float(f"{lr:.3g}")
