"""dama: DAMA — Data- and Model-aware Direct Preference Optimization for vision-language models (Lu et al., ICML 2025).

The heavy objects (`DAMAConfig`, `DAMATrainer`) import TRL and transformers, so they load on first access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "DAMAConfig": "dama.config",
    "DAMATrainer": "dama.trainer",
    "MarginMomentsEMA": "dama.state",
    "RewardGapEMA": "dama.state",
    "beta_dpo_beta": "dama.objective",
    "dama_beta": "dama.objective",
    "dama_loss": "dama.objective",
    "mdpo_loss": "dama.objective",
    "data_aware_factor": "dama.objective",
    "model_aware_factor": "dama.objective",
}

__all__ = [
    "__version__",
    "DAMAConfig",
    "DAMATrainer",
    "MarginMomentsEMA",
    "RewardGapEMA",
    "beta_dpo_beta",
    "dama_beta",
    "dama_loss",
    "mdpo_loss",
    "data_aware_factor",
    "model_aware_factor",
]

if TYPE_CHECKING:
    from dama.config import DAMAConfig
    from dama.objective import beta_dpo_beta, dama_beta, dama_loss, data_aware_factor, mdpo_loss, model_aware_factor
    from dama.state import MarginMomentsEMA, RewardGapEMA
    from dama.trainer import DAMATrainer


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dama' has no attribute {name!r}")
