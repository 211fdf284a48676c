"""Typed errors of the W&B client.

Every failure the client reports is a ``WandbError``; callers catch at the
level they need and ``wfs.errno_map`` turns them into errno values::

    WandbError                 anything the W&B service or the network did wrong
    ├── NotFound               the entity/project/run/file does not exist     -> ENOENT
    ├── AuthError              bad API key (401) or no access (403)           -> EACCES
    ├── TransientError         worth retrying; raised once retries are spent  -> EIO
    │   ├── RateLimited        429 after every retry
    │   └── Unreachable        connection refused/reset, DNS, timeouts
    ├── UrlExpired             a signed storage URL answered 403 (refreshable) -> EIO
    └── BadResponse            the answer broke the protocol (bad JSON, GraphQL
                               errors, wrong Content-Range, short body)       -> EIO

Messages name what was asked for (``entity/project/run_id``, a file name, a
host) and never contain the API key or a signed URL's query string.
"""

from __future__ import annotations


class WandbError(Exception):
    """Base of every error raised by ``wfs.client``."""


class NotFound(WandbError):
    """The requested object does not exist (or is a W&B placeholder)."""


class AuthError(WandbError):
    """The API key was rejected, or the key has no access to the object."""


class TransientError(WandbError):
    """A failure that may pass: 5xx, 429, connection trouble. Raised once retries are spent."""


class RateLimited(TransientError):
    """W&B kept answering 429 Too Many Requests."""


class Unreachable(TransientError):
    """The host could not be reached or did not answer in time."""


class UrlExpired(WandbError):
    """A signed storage URL has expired (403 from the storage host)."""


class BadResponse(WandbError):
    """The server's answer does not follow the protocol."""
