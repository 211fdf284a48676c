"""WandbClient.read_range: URL choice, auth scoping, Range validation, resume, refresh."""

from __future__ import annotations

import logging
import threading

import pytest
import urllib3.exceptions

from client_fakeweb import Reply
from conftest import BASE, KEY
from wfs.client import AuthError, BadResponse, NotFound, RunFile, Unreachable, UrlExpired

DATA = bytes(range(256)) * 40  # 10240 bytes, every offset distinguishable
API_URL = f"{BASE}/files/e/p/r/dir/data.bin"
SIGNED = "https://storage.test/bucket/obj?X-Amz-Signature=SECRET1"
SIGNED2 = "https://storage.test/bucket/obj?X-Amz-Signature=SECRET2"


def run_file(*, url=API_URL, direct_url=None, name="dir/data.bin", size=len(DATA)):
    return RunFile(entity="e", project="p", run_id="r", name=name, size_bytes=size, url=url, direct_url=direct_url)


def ranged(data=DATA):
    """A storage handler that honours a single ``Range: bytes=a-b``."""

    def handler(req):
        spec = req.headers["Range"].removeprefix("bytes=")
        first, last = (int(x) for x in spec.split("-"))
        last = min(last, len(data) - 1)
        return Reply(206, data[first:last + 1], {"Content-Range": f"bytes {first}-{last}/{len(data)}"})

    return handler


def ranges_sent(web, prefix):
    return [r.headers["Range"] for r in web.to(prefix)]


def test_direct_url_first_without_auth(web, client):
    web.on("GET", SIGNED, ranged())
    assert client.read_range(run_file(direct_url=SIGNED), 100, 300) == DATA[100:300]
    (req,) = web.requests
    assert req.url == SIGNED
    assert req.headers["Range"] == "bytes=100-299"
    assert "Authorization" not in req.headers
    stats = client.stats()
    assert (stats.byte_requests, stats.bytes_received, stats.graphql_requests) == (1, 200, 0)


def test_url_redirect_auth_on_api_host_only_and_cached(web, client):
    web.on("GET", API_URL, Reply(302, b"", {"Location": SIGNED}))
    web.on("GET", SIGNED, ranged())
    f = run_file()
    assert client.read_range(f, 0, 10) == DATA[:10]
    api_req, storage_req = web.requests
    assert api_req.url == API_URL and api_req.headers["Authorization"].startswith("Basic ")
    assert storage_req.url == SIGNED and "Authorization" not in storage_req.headers
    # The signed URL is remembered: the next read goes straight to storage.
    assert client.read_range(f, 10, 20) == DATA[10:20]
    assert [r.url for r in web.requests] == [API_URL, SIGNED, SIGNED]


def test_redirect_to_other_port_gets_no_auth_relative_location_keeps_it(web, make_client):
    base = "http://127.0.0.1:8080"
    client = make_client(base)
    api = f"{base}/files/e/p/r/x"
    web.on("GET", api, Reply(307, b"", {"Location": "/storage/x?sig=S"}))
    web.on("GET", f"{base}/storage/x", Reply(302, b"", {"Location": "http://127.0.0.1:9000/b/x?sig=T"}))
    web.on("GET", "http://127.0.0.1:9000/b/x", ranged())
    assert client.read_range(run_file(url=api, name="x"), 5, 9) == DATA[5:9]
    assert [r.url for r in web.requests] == [api, f"{base}/storage/x?sig=S", "http://127.0.0.1:9000/b/x?sig=T"]
    assert [("Authorization" in r.headers) for r in web.requests] == [True, True, False]


def test_missing_url_builds_quoted_files_url(web, client):
    built = f"{BASE}/files/e/p/r/a%20b/%5Bc%5D%3A%40.txt"
    web.on("GET", built, ranged())
    f = run_file(url=None, name="a b/[c]:@.txt")
    assert client.read_range(f, 0, 4) == DATA[:4]
    assert web.requests[0].url == built
    assert web.requests[0].headers["Authorization"].startswith("Basic ")


def test_wrong_content_range_is_bad_response(web, client):
    web.on("GET", SIGNED, Reply(206, DATA[0:200], {"Content-Range": f"bytes 0-199/{len(DATA)}"}))
    with pytest.raises(BadResponse, match="Content-Range"):
        client.read_range(run_file(direct_url=SIGNED), 100, 300)


@pytest.mark.parametrize("header", [None, "bytes */10240", "bytes 100-400/10240", "items 100-299/10240"])
def test_malformed_or_overlong_content_range_is_bad_response(web, client, header):
    headers = {"Content-Range": header} if header else {}
    web.on("GET", SIGNED, Reply(206, DATA[100:300], headers))
    with pytest.raises(BadResponse):
        client.read_range(run_file(direct_url=SIGNED), 100, 300)


def test_file_shorter_than_asked_is_bad_response(web, client):
    web.on("GET", SIGNED, Reply(206, DATA[100:150], {"Content-Range": "bytes 100-149/150"}))
    with pytest.raises(BadResponse, match="150"):
        client.read_range(run_file(direct_url=SIGNED), 100, 300)


def test_200_full_body_is_sliced_without_reading_the_rest(web, client):
    big = bytes(range(256)) * 4096 * 4  # 4 MiB
    web.on("GET", SIGNED, Reply(200, big))
    assert client.read_range(run_file(direct_url=SIGNED, size=len(big)), 1000, 5000) == big[1000:5000]
    assert len(web.requests) == 1
    assert client.stats().bytes_received == 5000  # skipped 1000, kept 4000, never read the rest


def test_short_body_is_resumed_with_range_for_the_remainder(web, client):
    # First answer promises 200 bytes but the connection dies after 70.
    web.on("GET", SIGNED,
           Reply(206, DATA[100:170], {"Content-Range": f"bytes 100-299/{len(DATA)}"}, content_length=200),
           Reply(206, DATA[170:300], {"Content-Range": f"bytes 170-299/{len(DATA)}"}))
    assert client.read_range(run_file(direct_url=SIGNED), 100, 300) == DATA[100:300]
    assert ranges_sent(web, SIGNED) == ["bytes=100-299", "bytes=170-299"]
    assert client.stats().retries == 1


def test_cleanly_short_body_is_resumed(web, client):
    # Content-Range claims 200 bytes, the body (and Content-Length) only has 50.
    web.on("GET", SIGNED,
           Reply(206, DATA[0:50], {"Content-Range": f"bytes 0-199/{len(DATA)}"}),
           ranged())
    assert client.read_range(run_file(direct_url=SIGNED), 0, 200) == DATA[0:200]
    assert ranges_sent(web, SIGNED) == ["bytes=0-199", "bytes=50-199"]


def test_server_sending_a_smaller_sub_range_is_continued(web, client):
    web.on("GET", SIGNED,
           Reply(206, DATA[0:64], {"Content-Range": f"bytes 0-63/{len(DATA)}"}),
           ranged())
    assert client.read_range(run_file(direct_url=SIGNED), 0, 128) == DATA[:128]
    assert ranges_sent(web, SIGNED) == ["bytes=0-127", "bytes=64-127"]
    assert client.stats().retries == 0


def test_body_that_keeps_breaking_gives_up(web, make_client):
    client = make_client(max_retries=2)
    web.on("GET", SIGNED, Reply(206, b"", {"Content-Range": f"bytes 0-99/{len(DATA)}"}, content_length=100))
    with pytest.raises(Unreachable, match="storage.test"):
        client.read_range(run_file(direct_url=SIGNED), 0, 100)
    assert len(web.requests) == 3


def test_expired_direct_url_is_refreshed_once_via_url(web, client):
    web.on("GET", SIGNED, Reply(403, b"<Error>Request has expired</Error>"))
    web.on("GET", API_URL, Reply(302, b"", {"Location": SIGNED2}))
    web.on("GET", SIGNED2, ranged())
    f = run_file(direct_url=SIGNED)
    assert client.read_range(f, 0, 16) == DATA[:16]
    assert [r.url for r in web.requests] == [SIGNED, API_URL, SIGNED2]
    assert client.read_range(f, 16, 32) == DATA[16:32]
    assert [r.url for r in web.requests][-1] == SIGNED2 and len(web.requests) == 4


def test_still_403_after_refresh_raises(web, client):
    web.on("GET", SIGNED, Reply(403))
    web.on("GET", API_URL, Reply(302, b"", {"Location": SIGNED2}))
    web.on("GET", SIGNED2, Reply(403))
    with pytest.raises(UrlExpired, match="dir/data.bin"):
        client.read_range(run_file(direct_url=SIGNED), 0, 16)
    assert [r.url for r in web.requests] == [SIGNED, API_URL, SIGNED2]


def test_403_on_api_host_is_auth_error(web, client):
    web.on("GET", API_URL, Reply(403))
    with pytest.raises(AuthError, match="no access"):
        client.read_range(run_file(), 0, 16)
    assert len(web.requests) == 1


@pytest.mark.parametrize("status, error", [(404, NotFound), (416, BadResponse), (501, BadResponse)])
def test_error_statuses(web, client, status, error):
    web.on("GET", SIGNED, Reply(status))
    with pytest.raises(error):
        client.read_range(run_file(direct_url=SIGNED), 0, 16)
    assert len(web.requests) == 1  # none of these is retried


def test_empty_range_sends_nothing(web, client):
    assert client.read_range(run_file(direct_url=SIGNED), 7, 7) == b""
    assert web.requests == []


def test_connection_error_mid_body_resumes(web, client):
    calls = []

    def flaky(req):
        calls.append(req.headers["Range"])
        if len(calls) == 1:
            return Reply(206, DATA[0:30], {"Content-Range": f"bytes 0-99/{len(DATA)}"}, content_length=100)
        return ranged()(req)

    web.on("GET", SIGNED, flaky)
    assert client.read_range(run_file(direct_url=SIGNED), 0, 100) == DATA[:100]
    assert calls == ["bytes=0-99", "bytes=30-99"]


def test_connection_refused_is_unreachable_naming_host(web, make_client):
    client = make_client(max_retries=2)
    web.on("GET", SIGNED, lambda req: Reply(error=urllib3.exceptions.NewConnectionError(None, "refused")))
    with pytest.raises(Unreachable, match="storage.test"):
        client.read_range(run_file(direct_url=SIGNED), 0, 16)
    assert len(web.requests) == 3
    assert client.stats().retries == 2


def test_logs_never_hold_key_or_signature(web, client, caplog):
    web.on("GET", SIGNED, Reply(503), Reply(403), ranged())  # retried 503, expired, then fine
    web.on("GET", API_URL, Reply(302, b"", {"Location": SIGNED}))
    with caplog.at_level(logging.DEBUG):  # urllib3's own DEBUG lines included
        assert client.read_range(run_file(direct_url=SIGNED), 0, 8) == DATA[:8]
    assert [r.url for r in web.requests] == [SIGNED, SIGNED, API_URL, SIGNED]
    assert "retrying GET storage.test:443/bucket/obj after status 503" in caplog.text
    assert "Retry: /bucket/obj?…" in caplog.text  # urllib3 logged the URL, redacted
    assert "SECRET" not in caplog.text
    assert KEY not in caplog.text


def test_requests_never_falls_back_to_netrc(web, client, tmp_path, monkeypatch):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine storage.test login u password storage-secret\n")
    monkeypatch.setenv("NETRC", str(netrc))
    web.on("GET", SIGNED, ranged())
    assert client.read_range(run_file(direct_url=SIGNED), 0, 4) == DATA[:4]
    assert "Authorization" not in web.requests[0].headers


def test_parallel_reads(web, client):
    web.on("GET", SIGNED, ranged())
    f = run_file(direct_url=SIGNED)
    results: dict[int, bytes] = {}

    def work(i):
        results[i] = client.read_range(f, i * 100, i * 100 + 100)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(results[i] == DATA[i * 100:i * 100 + 100] for i in range(32))
    stats = client.stats()
    assert (stats.byte_requests, stats.bytes_received) == (32, 3200)
