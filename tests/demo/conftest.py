"""One cache of the quick preset's world models for every demo test that trains (built once per session)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def quick_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("demo-cache")
