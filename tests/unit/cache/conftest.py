"""Fixtures for the block-cache tests (helpers live in ``cachetest_support``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cachetest_support import MIB


@pytest.fixture
def cache_root(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def make_cache(cache_root: Path):
    from wfs.cache import BlockCache

    made = []

    def make(max_bytes: int = 256 * MIB, block_size_bytes: int = 1 * MIB, **kwargs):
        cache = BlockCache(cache_root, max_bytes, block_size_bytes, **kwargs)
        made.append(cache)
        return cache

    yield make
    for cache in made:
        cache.close(timeout_seconds=5)
