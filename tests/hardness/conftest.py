"""Fixtures for the hardness tests: a tiny config-built CLIP (its tokenizer appends EOS) and small datasets.

The row builders live in `hardness_rows.py`, which test modules import by that name: a module named `conftest` is
ambiguous (tests/, tests/core/, tests/eval/ and this folder each have one), so `from conftest import ...` depended on
which of them pytest had loaded last.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hardness_rows import make_rows, write_parquet


@pytest.fixture(scope="session")
def tiny_clip():
    from dama.tiny import build_clip

    return build_clip()


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory, tiny_clip) -> Path:
    from dama.tiny import save_pretrained

    model, processor = tiny_clip
    return save_pretrained(model, processor, tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="session")
def scorer(clip_dir):
    from dama.hardness.scorers import DualEncoderScorer

    return DualEncoderScorer.from_pretrained(str(clip_dir), device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def splitter():
    from dama.hardness.splitters import SentenceSplitter

    return SentenceSplitter()


@pytest.fixture
def pairs_parquet(tmp_path) -> Path:
    return write_parquet(tmp_path / "pairs.parquet", make_rows(23))
