"""The one place where exceptions become errno values.

| exception                                   | errno  |
|---------------------------------------------|--------|
| ``NotFound``                                | ENOENT |
| ``AuthError`` (bad key, no access)          | EACCES |
| ``Unreachable`` / ``RateLimited`` / other   | EIO    |
|   ``TransientError`` after retries          |        |
| ``UrlExpired``, ``BadResponse``             | EIO    |
| cache integrity failure (bad length, md5)   | EIO    |
| ``OSError`` with an errno                   | itself |
| anything else (a bug): logged with traceback| EIO    |
"""

from __future__ import annotations

import errno
import logging

from wfs.client.errors import AuthError, NotFound, WandbError

logger = logging.getLogger(__name__)

_TABLE: tuple[tuple[type[BaseException], int], ...] = (
    (NotFound, errno.ENOENT),
    (AuthError, errno.EACCES),
    (WandbError, errno.EIO),
    (NotADirectoryError, errno.ENOTDIR),
    (IsADirectoryError, errno.EISDIR),
)


def to_errno(exc: BaseException) -> int:
    """The errno a FUSE caller should see for ``exc``."""
    for kind, code in _TABLE:
        if isinstance(exc, kind):
            return code
    if isinstance(exc, OSError) and isinstance(exc.errno, int) and exc.errno > 0:
        return exc.errno
    if getattr(exc, "errno_code", None):  # e.g. the cache's integrity errors
        return int(exc.errno_code)
    logger.error("unexpected error, answering EIO", exc_info=exc)
    return errno.EIO
