"""HTTP transport of the W&B client: one keep-alive session, retries, origin-bound auth.

Job: build the ``requests.Session`` every client call goes through, retry
what is worth retrying (inside urllib3, before the caller sees a response),
attach credentials only where they belong, and turn ``requests``/``urllib3``
exceptions into ``wfs.client.errors`` at this one edge.

Invariants:

* The ``Authorization`` header is added per request by ``OriginAuth``, and
  only when the request URL has exactly the API's scheme, host and port. It
  is never a session default, and ``requests`` never falls back to netrc
  (``OriginAuth`` is always passed, so ``trust_env`` netrc lookup is skipped).
* Redirects are never followed by ``requests`` (callers pass
  ``allow_redirects=False`` and follow them themselves, re-checking origin).
* Retries (connection errors, read errors, 429, 500, 502, 503, 504; not 501)
  use exponential backoff with jitter; ``Retry-After`` and ``RateLimit-Reset``
  are honoured; no single sleep exceeds ``backoff_max_seconds``.
* Inside a client call (``wfs.client.limits.call_scope``) a retry is taken
  only if its sleep ends before the call's deadline, and every retried
  request first takes a token from the call's request budget.
* Log lines name the host and the URL path only: never a key, never a query
  string (signed URLs carry their signature there).
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import InvalidHeader, MaxRetryError, ResponseError
from urllib3.util.retry import Retry

from wfs.client import limits
from wfs.client.errors import RateLimited, TransientError, Unreachable

logger = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
POOL_MAXSIZE = 32  # connections kept per host: many FUSE threads read at once
USER_AGENT = "wfs (read-only W&B filesystem)"

_DEFAULT_PORTS = {"http": 80, "https": 443}
_QUERY_RE = re.compile(r"\?[^\s'\"<>]*")


class RedactQueryFilter(logging.Filter):
    """Strips query strings (signed-URL signatures) from records of the loggers it is on.

    urllib3 logs request URLs with their query at DEBUG and, for connection
    retries, at WARNING; this filter keeps those lines but never a signature.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken record is not ours to fix
            return True
        if "?" in message:
            record.msg = _QUERY_RE.sub("?…", message)
            record.args = None
        return True


_REDACT_FILTER = RedactQueryFilter()
for _name in ("urllib3.connectionpool", "urllib3.poolmanager", "urllib3.util.retry", "urllib3.response"):
    _logger = logging.getLogger(_name)
    if not any(isinstance(f, RedactQueryFilter) for f in _logger.filters):
        _logger.addFilter(_REDACT_FILTER)


def origin_of(url: str) -> tuple[str, str, int] | None:
    """``(scheme, host, port)`` of a URL with default ports filled in, or None if unparsable."""
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        host = (parts.hostname or "").lower()
        port = parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:
        return None
    if not scheme or not host or port is None:
        return None
    return scheme, host, port


def redact_url(url: str) -> str:
    """A URL safe to log: scheme, host and path; no query, fragment or userinfo."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    netloc = parts.netloc.rpartition("@")[2]
    suffix = "?…" if parts.query else ""
    return f"{parts.scheme}://{netloc}{parts.path}{suffix}"


def host_of(url: str) -> str:
    """``host[:port]`` as written in the URL (no userinfo)."""
    try:
        return urlsplit(url).netloc.rpartition("@")[2]
    except ValueError:
        return "<unparsable host>"


class OriginAuth(requests.auth.AuthBase):
    """Adds ``Authorization: Basic base64("api:" + key)`` only to requests for one origin.

    Passed with *every* request so that ``requests`` never substitutes netrc
    credentials; for any other origin (storage hosts, another port) it adds
    nothing and removes any Authorization header that may have slipped in.
    """

    def __init__(self, base_url: str, api_key: str) -> None:
        self._origin = origin_of(base_url)
        token = base64.b64encode(f"api:{api_key}".encode()).decode("ascii")
        self._header = f"Basic {token}"

    def __repr__(self) -> str:  # never show the key
        return f"OriginAuth(origin={self._origin!r})"

    def applies_to(self, url: str) -> bool:
        return self._origin is not None and origin_of(url) == self._origin

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if request.url and self.applies_to(request.url):
            request.headers["Authorization"] = self._header
        else:
            request.headers.pop("Authorization", None)
        return request


class WfsRetry(Retry):
    """urllib3 ``Retry`` that caps every sleep, honours ``RateLimit-Reset``, logs and counts.

    ``on_retry`` is called once per retry actually taken (not for the final
    give-up); it must be thread-safe.
    """

    def __init__(self, *args, on_retry: Callable[[], None] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.on_retry = on_retry

    def new(self, **kw):  # keep on_retry across the copies urllib3 makes
        new_retry = super().new(**kw)
        new_retry.on_retry = self.on_retry
        return new_retry

    def get_retry_after(self, response) -> float | None:
        value: float | None = None
        try:
            value = super().get_retry_after(response)
        except InvalidHeader:
            value = None
        if value is None and response.status == 429:
            reset = response.headers.get("RateLimit-Reset")
            if reset is not None:
                try:
                    value = max(0.0, float(reset.strip()))
                except ValueError:
                    value = None
        if value is None:
            return None
        return min(value, self.backoff_max)

    def planned_sleep(self, response=None) -> float:
        """How long ``sleep(response)`` is about to wait (the jitter may differ slightly)."""
        if self.respect_retry_after_header and response is not None:
            retry_after = self.get_retry_after(response)
            if retry_after:
                return retry_after
        return self.get_backoff_time()

    def increment(self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None):
        new_retry = super().increment(method, url, response, error, _pool, _stacktrace)
        host = f"{_pool.host}:{_pool.port}" if _pool is not None else "?"
        path = (url or "").split("?", 1)[0]
        cause = f"status {response.status}" if response is not None and response.status else type(error).__name__
        attempt = len(new_retry.history)
        ctx = limits.current()
        if ctx is not None and new_retry.planned_sleep(response) >= ctx.deadline.remaining():
            logger.warning("giving up on %s %s%s after %s: the call's %gs limit would pass before a retry",
                           method, host, path, cause, ctx.deadline.seconds)
            raise MaxRetryError(_pool, url, error or ResponseError(f"deadline after {cause}"))
        logger.warning("retrying %s %s%s after %s (retry %d)", method, host, path, cause, attempt)
        if self.on_retry is not None:
            self.on_retry()
        return new_retry

    def sleep(self, response=None) -> None:
        super().sleep(response)
        ctx = limits.current()
        if ctx is not None and ctx.bucket is not None:
            try:
                ctx.bucket.acquire(ctx.deadline)
            except limits.BudgetExceeded as exc:
                raise MaxRetryError(None, "", ResponseError(str(exc))) from None


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 5
    backoff_factor_seconds: float = 1.0
    backoff_max_seconds: float = 60.0

    def build(self, on_retry: Callable[[], None] | None = None) -> WfsRetry:
        retries = max(0, int(self.max_retries))
        backoff_max = max(0.0, float(self.backoff_max_seconds))
        return WfsRetry(
            total=retries,
            connect=retries,
            read=retries,
            status=retries,
            other=0,
            redirect=False,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=frozenset({"GET", "POST", "HEAD"}),
            backoff_factor=max(0.0, self.backoff_factor_seconds),
            backoff_jitter=min(max(0.0, self.backoff_factor_seconds), backoff_max),
            backoff_max=backoff_max,
            respect_retry_after_header=True,
            raise_on_status=False,  # give us the last response: we map it to an error
            raise_on_redirect=False,
            on_retry=on_retry,
        )


def build_session(policy: RetryPolicy, on_retry: Callable[[], None] | None = None,
                  session: requests.Session | None = None) -> requests.Session:
    """A session with a retrying, pooled adapter mounted for http:// and https://."""
    session = session if session is not None else requests.Session()
    adapter = HTTPAdapter(
        pool_connections=16,
        pool_maxsize=POOL_MAXSIZE,
        max_retries=policy.build(on_retry),
        pool_block=False,
    )
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    session.headers.pop("Authorization", None)
    session.hooks["response"].append(_log_response)
    return session


def _log_response(response: requests.Response, *args, **kwargs) -> None:
    """One debug line per HTTP exchange: method, URL without its query, status, time to headers."""
    if logger.isEnabledFor(logging.DEBUG):
        request = response.request
        logger.debug(
            "%s %s -> %d in %.1f ms%s",
            request.method,
            redact_url(request.url or ""),
            response.status_code,
            response.elapsed.total_seconds() * 1000,
            f" (Range {request.headers['Range']})" if "Range" in request.headers else "",
        )


def status_error(status: int, what: str, host: str) -> Exception | None:
    """The error for a retryable status that survived every retry, or None."""
    if status == 429:
        return RateLimited(f"{host} kept answering 429 Too Many Requests for {what}")
    if status in RETRY_STATUSES:
        return TransientError(f"{host} answered {status} for {what} after retries")
    return None


def map_request_exception(exc: Exception, what: str, host: str) -> Exception:
    """Turn a ``requests`` exception into a ``wfs.client.errors`` one (message names the host)."""
    if isinstance(exc, requests.exceptions.RetryError):
        return TransientError(f"{host}: retries spent for {what}")
    if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
        kind = "timed out" if isinstance(exc, requests.exceptions.Timeout) else "unreachable"
        return Unreachable(f"{host} {kind} while fetching {what} ({type(exc).__name__})")
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return Unreachable(f"{host} cut the connection while sending {what}")
    return TransientError(f"{host}: {type(exc).__name__} while fetching {what}")
