"""The fake object store of the test server: signed URLs and the storage port.

A signed URL is ``{storage_url}/<object key>?expires=<unix>&sig=<hmac>`` with
``sig = HMAC-SHA256(secret, "<object key>\\n<expires>")``.

Invariants:
- Storage never asks for credentials; a request that carries an
  ``Authorization`` header is still served but counted in
  ``storage_auth_headers`` (credentials must never reach storage).
- Expired or badly signed URLs get 403 with an S3-like XML body; unknown
  objects 404. A single ``Range`` is honoured (206 + Content-Range), an
  unsatisfiable one gets 416, anything unparsable is ignored (200).
- Bodies are streamed in pieces of up to 1 MiB straight from the content;
  a truncation fault sends the full Content-Length, part of the body, then
  closes the connection.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from email.utils import formatdate
from urllib.parse import parse_qs, unquote, urlsplit

from wfs.testing.httpbase import QuietHandler

_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


class UrlSigner:
    def __init__(self, secret: bytes, ttl_seconds: float):
        self.secret = secret
        self.ttl_seconds = ttl_seconds

    def _sig(self, object_key: str, expires: int) -> str:
        msg = f"{object_key}\n{expires}".encode()
        return hmac.new(self.secret, msg, hashlib.sha256).hexdigest()

    def sign(self, storage_url: str, object_key: str, now: float | None = None) -> str:
        expires = int((time.time() if now is None else now) + self.ttl_seconds)
        return f"{storage_url}/{object_key}?expires={expires}&sig={self._sig(object_key, expires)}"

    def check(self, object_key: str, expires: str, sig: str) -> str | None:
        """None when valid, else the S3 error code to answer with."""
        try:
            exp = int(expires)
        except ValueError:
            return "AccessDenied"
        if not hmac.compare_digest(sig, self._sig(object_key, exp)):
            return "SignatureDoesNotMatch"
        if exp < time.time():
            return "AccessDenied"
        return None


def parse_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """(start, end_exclusive), "unsatisfiable", or None (serve everything)."""
    if not header or "," in header:
        return None
    m = _RANGE.match(header)
    if not m or (m.group(1) == "" and m.group(2) == ""):
        return None
    first, last = m.group(1), m.group(2)
    if first == "":  # suffix: the last n bytes
        n = int(last)
        if n == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - n), size
    start = int(first)
    end = size if last == "" else min(int(last) + 1, size)
    if last != "" and int(last) < start:
        return None  # syntactically invalid: ignore
    if start >= size:
        return "unsatisfiable"
    return start, end


def _s3_error(code: str, message: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    ).encode()


class StorageHandler(QuietHandler):
    def count_status(self, code: int) -> None:
        self.server.app.counters.add_to("status_counts", code)

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        app = self.server.app
        stats = app.counters
        stats.add("storage_requests")
        if self.headers.get("Authorization") is not None:
            stats.add("storage_auth_headers")
        decision = app.faults.decide("storage")
        if decision.latency_seconds:
            time.sleep(decision.latency_seconds)
        if decision.status is not None:
            self._fail(decision)
            return
        parts = urlsplit(self.path)
        object_key = unquote(parts.path.lstrip("/"))
        query = parse_qs(parts.query)
        problem = app.signer.check(
            object_key, (query.get("expires") or [""])[0], (query.get("sig") or [""])[0]
        )
        if problem:
            msg = "Request has expired" if problem == "AccessDenied" else "Signature mismatch"
            self.send_body(403, _s3_error(problem, msg), "application/xml")
            return
        rec = app.store.file_by_object(object_key)
        if rec is None:
            self.send_body(404, _s3_error("NoSuchKey", "The specified key does not exist."), "application/xml")
            return
        size = rec.size_bytes
        if self.headers.get("Range") is not None:
            stats.add("range_requests")
        rng = parse_range(self.headers.get("Range"), size)
        if rng == "unsatisfiable":
            self.send_body(
                416, _s3_error("InvalidRange", "The requested range is not satisfiable"),
                "application/xml", {"Content-Range": f"bytes */{size}"},
            )
            return
        start, end = rng if rng else (0, size)
        self.send_response(206 if rng else 200)
        self.send_header("Content-Type", rec.mimetype or "application/octet-stream")
        self.send_header("Content-Length", str(end - start))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Last-Modified", formatdate(rec.updated_at, usegmt=True))
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.end_headers()
        if self.command == "HEAD":
            return
        self._stream(rec, start, end, decision.truncate)

    def _stream(self, rec, start: int, end: int, truncate: bool) -> None:
        stats = self.server.app.counters
        limit = start + (end - start) // 2 if truncate else end
        sent = 0
        try:
            for piece in rec.content.iter_range(start, limit):
                self.wfile.write(piece)
                sent += len(piece)
        finally:
            stats.add("bytes_served", sent)
            stats.add_to("bytes_by_file", rec.key, sent)
        if truncate:
            self.close_connection = True  # the client sees EOF before Content-Length

    def _fail(self, decision) -> None:
        headers = {}
        if decision.status == 429:
            secs = max(0, int(round(decision.retry_after_seconds)))
            headers = {"Retry-After": str(secs), "RateLimit-Reset": str(secs)}
            body = _s3_error("SlowDown", "Please reduce your request rate.")
        else:
            body = _s3_error("InternalError", "We encountered an internal error.")
        self.send_body(decision.status, body, "application/xml", headers)
