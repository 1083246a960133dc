"""dama: DAMA — Data- and Model-aware Direct Preference Optimization for vision-language models (Lu et al., ICML 2025).

The public names follow the pipeline: `compute_hardness` (offline δ), `load_preference_dataset`, the trainer and its
config, and the pure objective functions of DAMA and its baselines. The heavy objects import TRL and transformers,
so every name loads on first access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dama._version import __version__

# public name -> the module that defines it (the one list: `__all__` and the lazy loader are built from it)
_LAZY = {
    "compute_hardness": "dama.hardness.compute",
    "load_preference_dataset": "dama.preference_data",
    "DAMAConfig": "dama.config",
    "DAMATrainer": "dama.trainer",
    "RewardGapEMA": "dama.state",
    "MarginMomentsEMA": "dama.state",
    "dama_beta": "dama.objective",
    "dama_loss": "dama.objective",
    "data_aware_factor": "dama.objective",
    "model_aware_factor": "dama.objective",
    "beta_dpo_beta": "dama.objective",
    "mdpo_loss": "dama.objective",
}

__all__ = ["__version__", *_LAZY]

if TYPE_CHECKING:  # for type checkers only (ruff cannot read `__all__` built from `_LAZY`, hence F401)
    from dama.config import DAMAConfig  # noqa: F401
    from dama.hardness.compute import compute_hardness  # noqa: F401
    from dama.objective import beta_dpo_beta, dama_beta, dama_loss, data_aware_factor, mdpo_loss, model_aware_factor  # noqa: F401
    from dama.preference_data import load_preference_dataset  # noqa: F401
    from dama.state import MarginMomentsEMA, RewardGapEMA  # noqa: F401
    from dama.trainer import DAMATrainer  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dama' has no attribute {name!r}")
