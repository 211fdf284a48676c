"""The block cache: remote objects as fixed-size blocks on local disk, under a hard cap.

Knows blocks and bytes only: callers pass an opaque key, a size and a
``fetch(start, end)`` function; nothing here imports W&B, the client, the
namespace or mfusepy.

- ``blockstore``: ``BlockCache`` / ``CachedFile`` (index, LRU cap, single flight, md5)
- ``readahead``: the sequential-read detector and growing window
- ``flight``: in-process single flight and the per-block ``flock``
- ``ledger``: the directory's accounted bytes, shared by every process using it (the cap is the directory's)
- ``layout``: file names, atomic writes, ``meta.json``, the startup scan
- ``maintenance``: ``cache_stats``, ``clear_cache``, ``prune_cache`` for the CLI
"""

from wfs.cache.blockstore import BlockCache, CachedFile, CacheStats, Fetch
from wfs.cache.errors import CacheError, CacheIntegrityError
from wfs.cache.maintenance import cache_stats, clear_cache, prune_cache

__all__ = [
    "BlockCache",
    "CachedFile",
    "CacheError",
    "CacheIntegrityError",
    "CacheStats",
    "Fetch",
    "cache_stats",
    "clear_cache",
    "prune_cache",
]
