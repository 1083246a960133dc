"""The one `--device auto` / `--dtype auto` policy (`dama.devices`), shared by hardness, eval, judges and training."""

from __future__ import annotations

import pytest
import torch

from dama.devices import resolve_device, resolve_dtype


def test_auto_device_prefers_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda:1")


@pytest.mark.parametrize(("device", "bf16", "expected"), [
    ("cpu", True, torch.float32),
    ("cuda", True, torch.bfloat16),
    ("cuda:0", False, torch.float16),
    ("mps", True, torch.float16),
])  # fmt: skip
def test_auto_dtype(monkeypatch, device, bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16)
    assert resolve_dtype("auto", device) == expected
    assert resolve_dtype("auto", torch.device(device)) == expected


def test_named_dtypes_and_aliases():
    assert resolve_dtype("bf16", "cpu") == resolve_dtype("bfloat16", "cuda") == torch.bfloat16
    assert resolve_dtype("fp16", "cpu") == resolve_dtype("half", "cpu") == torch.float16
    assert resolve_dtype("fp32", "cuda") == torch.float32
    with pytest.raises(ValueError, match="unknown dtype 'int8'"):
        resolve_dtype("int8", "cpu")


def test_training_bf16_follows_the_same_policy(monkeypatch, tmp_path):
    from dama.config import DAMAConfig

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert DAMAConfig(output_dir=str(tmp_path)).bf16 is False
