"""Errors raised by the block cache.

::

    CacheError               base of everything the cache itself raises  -> EIO
    └── CacheIntegrityError  bytes that cannot be trusted: a fetch returned the
                             wrong number of bytes, or a complete object's md5
                             did not match (after one refetch)           -> EIO

Exceptions raised by a caller's ``fetch`` are never wrapped: they reach the
reader unchanged. Each error carries ``errno_code`` so ``wfs.errno_map`` can
map it without importing this package.
"""

from __future__ import annotations

import errno


class CacheError(Exception):
    """Base of every error raised by ``wfs.cache``."""

    errno_code = errno.EIO


class CacheIntegrityError(CacheError):
    """Fetched or stored bytes failed a length or md5 check; they were not served from cache."""
