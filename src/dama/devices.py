"""The one policy for `--device auto` and `--dtype auto`, used by every command that loads a model itself.

- device `auto`: CUDA, then MPS, then the CPU; anything else is passed to `torch.device` as it is.
- dtype `auto`: float32 on the CPU (half precision is slow there and changes scores, docs/hardness.md); bfloat16 on a
  CUDA GPU that supports it (float16 overflows in large language models); float16 on other accelerators.

`dama train` follows the same rule for its default `bf16` (`DAMAConfig`). torch is imported when a function runs, so
importing this module costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DTYPES = ("auto", "float32", "bfloat16", "float16")
_ALIASES = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16"}


def resolve_device(device: str = "auto") -> torch.device:
    """`device` as a `torch.device`; `auto` picks CUDA, then MPS, then the CPU."""
    import torch

    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_dtype(dtype: str, device: torch.device | str) -> torch.dtype:
    """`dtype` (a name of `DTYPES`, or fp32/fp16/half/bf16) as a `torch.dtype`; `auto` follows the module's policy."""
    import torch

    device = torch.device(device)
    if dtype == "auto":
        if device.type == "cpu":
            return torch.float32
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float16
    name = _ALIASES.get(dtype, dtype)
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose {', '.join(DTYPES)}")
    return getattr(torch, name)
