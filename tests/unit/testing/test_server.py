"""Unit tests of the W&B-compatible test server (wfs.testing), over real HTTP."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib

import pytest
import requests

from wfs.testing import Generated, WandbTestServer, generated_bytes, generated_md5_b64, md5_b64_of
from wfs.testing.graphql_api import like_to_regex
from wfs.testing.sample import build_sample
from wfs.testing.storage import parse_range

pytestmark = pytest.mark.timeout(60)

KEY = "k" * 40
OTHER_KEY = "o" * 40

FILES_QUERY = """
query RunFiles($e: String!, $p: String!, $r: String!, $after: String, $first: Int,
               $names: [String], $pattern: String) {
  project(name: $p, entityName: $e) {
    run(name: $r) {
      fileCount
      files(names: $names, pattern: $pattern, after: $after, first: $first) {
        totalCount
        edges { node { id name displayName url directUrl sizeBytes mimetype updatedAt md5 digest storagePath } cursor }
        pageInfo { endCursor hasNextPage }
      }
    }
  }
}"""


@pytest.fixture
def srv():
    server = WandbTestServer(
        api_keys={KEY: "alice", OTHER_KEY: "bob"}, teams={"alice": ["team-a"]}, page_cap=1000
    )
    with server:
        yield server


@pytest.fixture
def http():
    with requests.Session() as session:
        yield session


def gql(srv, http, query, variables=None, key=KEY):
    resp = http.post(f"{srv.base_url}/graphql", json={"query": query, "variables": variables or {}},
                     auth=("api", key), timeout=10)
    return resp


def data(srv, http, query, variables=None):
    resp = gql(srv, http, query, variables)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert "errors" not in body, body
    return body["data"]


def all_files(srv, http, run=("alice", "proj", "run1"), first=50, **extra):
    names, after, pages = [], None, 0
    while True:
        d = data(srv, http, FILES_QUERY, {"e": run[0], "p": run[1], "r": run[2], "after": after,
                                          "first": first, **extra})
        conn = d["project"]["run"]["files"]
        pages += 1
        names += [edge["node"]["name"] for edge in conn["edges"]]
        if not conn["pageInfo"]["hasNextPage"]:
            return names, pages, d
        after = conn["edges"][-1]["cursor"]
        assert conn["pageInfo"]["endCursor"] == after
        assert pages < 100


# --- GraphQL ------------------------------------------------------------------
def test_files_pagination_respects_page_cap(srv, http):
    srv.page_cap = 3
    for i in range(10):
        srv.put_file("alice", "proj", "run1", f"f{i:02d}.txt", b"x" * i)
    names, pages, last = all_files(srv, http, first=50)
    assert names == [f"f{i:02d}.txt" for i in range(10)]
    assert pages == 4
    assert last["project"]["run"]["fileCount"] == 10
    assert last["project"]["run"]["files"]["totalCount"] == 10
    names, pages, _ = all_files(srv, http, first=2)
    assert len(names) == 10 and pages == 5


def test_cursor_is_stable_when_files_are_added(srv, http):
    for name in ("a", "c", "e"):
        srv.put_file("alice", "proj", "run1", name, b"1")
    d = data(srv, http, FILES_QUERY, {"e": "alice", "p": "proj", "r": "run1", "first": 2})
    cursor = d["project"]["run"]["files"]["pageInfo"]["endCursor"]
    srv.put_file("alice", "proj", "run1", "b", b"1")  # sorts before the cursor
    srv.put_file("alice", "proj", "run1", "d", b"1")  # sorts after it
    d = data(srv, http, FILES_QUERY, {"e": "alice", "p": "proj", "r": "run1", "after": cursor})
    assert [e["node"]["name"] for e in d["project"]["run"]["files"]["edges"]] == ["d", "e"]


def test_bad_cursor_is_an_error(srv, http):
    srv.put_file("alice", "proj", "run1", "a", b"1")
    body = gql(srv, http, FILES_QUERY, {"e": "alice", "p": "proj", "r": "run1", "after": "garbage!"}).json()
    assert body["errors"]


def test_file_node_fields(srv, http):
    rec = srv.put_file("alice", "proj", "run1", "media/images/a b.png", b"\x89PNG...")
    srv.put_file("alice", "proj", "run1", "big.bin", Generated(5 * 2**30, seed=7, md5=False))
    d = data(srv, http, FILES_QUERY, {"e": "alice", "p": "proj", "r": "run1"})
    nodes = {e["node"]["name"]: e["node"] for e in d["project"]["run"]["files"]["edges"]}
    png = nodes["media/images/a b.png"]
    assert png["sizeBytes"] == 7
    assert png["md5"] == base64.b64encode(hashlib.md5(b"\x89PNG...").digest()).decode()
    assert png["mimetype"] == "image/png"
    assert png["displayName"] == "a b.png"
    assert png["url"] == f"{srv.base_url}/files/alice/proj/run1/media/images/a%20b.png"
    assert png["directUrl"].startswith(srv.storage_url + "/") and "sig=" in png["directUrl"]
    assert png["storagePath"] == rec.object_key
    assert len(png["updatedAt"]) == 19 and png["updatedAt"][10] == "T"
    big = nodes["big.bin"]
    assert big["sizeBytes"] == 5 * 2**30  # Int64 beyond 2^31
    assert big["md5"] is None


def test_names_and_pattern(srv, http):
    for name in ("a.json", "b.json", "c.txt", "media/x_1.png", "media/xy1.png", "50%.txt"):
        srv.put_file("alice", "proj", "run1", name, b"1")
    names, _, d = all_files(srv, http, names=["c.txt", "a.json", "missing.txt"])
    assert names == ["a.json", "c.txt"]
    assert d["project"]["run"]["fileCount"] == 6  # the run's total, whatever the filter
    assert all_files(srv, http, names=[])[0] == sorted(
        ["a.json", "b.json", "c.txt", "media/x_1.png", "media/xy1.png", "50%.txt"])
    assert all_files(srv, http, pattern="%.json")[0] == ["a.json", "b.json"]
    assert all_files(srv, http, pattern="media/x_1.png")[0] == ["media/x_1.png", "media/xy1.png"]
    assert all_files(srv, http, pattern="media/x\\_1%")[0] == ["media/x_1.png"]
    assert all_files(srv, http, pattern="50\\%%")[0] == ["50%.txt"]
    srv.missing_file_placeholders = True
    d = data(srv, http, FILES_QUERY, {"e": "alice", "p": "proj", "r": "run1", "names": ["nope", "a.json"]})
    nodes = {e["node"]["name"]: e["node"] for e in d["project"]["run"]["files"]["edges"]}
    assert nodes["nope"]["md5"] == "0" and nodes["a.json"]["md5"] != "0"


def test_like_to_regex():
    assert like_to_regex("a%b_").fullmatch("aXXXbY")
    assert not like_to_regex("a%b_").fullmatch("ab")
    assert like_to_regex("a.b").fullmatch("a.b") and not like_to_regex("a.b").fullmatch("aXb")


def test_invalid_query_returns_errors(srv, http):
    resp = gql(srv, http, "{ viewer { id noSuchField } }")
    assert resp.status_code == 200
    assert "noSuchField" in resp.json()["errors"][0]["message"]
    resp = gql(srv, http, "{ viewer { id ")
    assert resp.status_code == 200 and resp.json()["errors"]
    resp = http.post(f"{srv.base_url}/graphql", data=b"{not json", auth=("api", KEY))
    assert resp.status_code == 400


def test_viewer_models_entity_server_info(srv, http):
    srv.add_project("alice", "zeta")
    srv.add_run("alice", "alpha", "r1")
    srv.add_run("team-a", "shared", "r9")
    d = data(srv, http, """{ viewer { id entity username name teams { edges { node { name } } } }
                               models(entityName: "alice", first: 1) { edges { node { id name entityName createdAt } cursor }
                                                                         pageInfo { endCursor hasNextPage } }
                               team: entity(name: "team-a") { name isTeam }
                               user: entity(name: "alice") { name isTeam }
                               none: entity(name: "nobody") { name }
                               serverInfo { features { name isEnabled } } }""")
    assert d["viewer"]["entity"] == "alice" and d["viewer"]["username"] == "alice"
    assert d["viewer"]["teams"]["edges"] == [{"node": {"name": "team-a"}}]
    assert d["models"]["edges"][0]["node"]["name"] == "alpha"
    assert d["models"]["pageInfo"]["hasNextPage"] is True
    assert d["team"] == {"name": "team-a", "isTeam": True}
    assert d["user"] == {"name": "alice", "isTeam": False}
    assert d["none"] is None
    d2 = data(srv, http, 'query($c: String) { models(entityName: "alice", after: $c) { edges { node { name } } pageInfo { hasNextPage } } }',
              {"c": d["models"]["pageInfo"]["endCursor"]})
    assert [e["node"]["name"] for e in d2["models"]["edges"]] == ["zeta"]
    resp = gql(srv, http, "{ viewer { entity } }", key=OTHER_KEY)
    assert resp.json()["data"]["viewer"]["entity"] == "bob"


RUNS_QUERY = """query($order: String, $filters: JSONString, $first: Int, $after: String) {
  project(name: "proj", entityName: "alice") {
    runCount(filters: $filters)
    runs(order: $order, filters: $filters, first: $first, after: $after) {
      edges { node { id name displayName state createdAt heartbeatAt updatedAt config summaryMetrics tags projectId } cursor }
      pageInfo { endCursor hasNextPage } } } }"""


def test_runs_order_filters_and_paging(srv, http):
    srv.add_run("alice", "proj", "r2", created_at="2024-01-02T00:00:00", state="running", display_name="two")
    srv.add_run("alice", "proj", "r1", created_at="2024-01-01T00:00:00", config={"lr": 0.1})
    srv.add_run("alice", "proj", "r3", created_at="2024-01-03T00:00:00Z", state="crashed")
    asc = data(srv, http, RUNS_QUERY, {"order": "+created_at", "filters": "{}"})["project"]
    assert [e["node"]["name"] for e in asc["runs"]["edges"]] == ["r1", "r2", "r3"]
    assert asc["runCount"] == 3
    node = asc["runs"]["edges"][0]["node"]
    assert node["createdAt"] == "2024-01-01T00:00:00"
    assert json.loads(node["config"]) == {"lr": 0.1} and json.loads(node["summaryMetrics"]) == {}
    desc = data(srv, http, RUNS_QUERY, {"order": "-created_at"})["project"]
    assert [e["node"]["name"] for e in desc["runs"]["edges"]] == ["r3", "r2", "r1"]
    page1 = data(srv, http, RUNS_QUERY, {"order": "-created_at", "first": 2})["project"]["runs"]
    page2 = data(srv, http, RUNS_QUERY, {"order": "-created_at", "first": 2,
                                         "after": page1["pageInfo"]["endCursor"]})["project"]["runs"]
    assert [e["node"]["name"] for e in page2["edges"]] == ["r1"] and not page2["pageInfo"]["hasNextPage"]
    weird = data(srv, http, RUNS_QUERY, {"filters": json.dumps({"tags": {"$in": ["x"]}, "$or": []})})
    assert weird["project"]["runCount"] == 3  # unknown filters are ignored
    running = data(srv, http, RUNS_QUERY, {"filters": json.dumps({"state": "running"})})["project"]
    assert running["runCount"] == 1 and running["runs"]["edges"][0]["node"]["displayName"] == "two"
    assert gql(srv, http, RUNS_QUERY, {"filters": "{bad json"}).json()["errors"]


def test_unknown_project_and_run_are_null(srv, http):
    srv.add_run("alice", "proj", "r1")
    d = data(srv, http, '{ a: project(name: "nope", entityName: "alice") { id } '
                        'b: project(name: "proj", entityName: "alice") { run(name: "zz") { id } } }')
    assert d["a"] is None and d["b"]["run"] is None


# --- auth ---------------------------------------------------------------------------
def test_bad_or_missing_key_is_401(srv, http):
    srv.put_file("alice", "proj", "run1", "a.txt", b"hello")
    assert gql(srv, http, "{ viewer { id } }", key="x" * 40).status_code == 401
    assert http.post(f"{srv.base_url}/graphql", json={"query": "{ viewer { id } }"}).status_code == 401
    url = srv.file_url("alice", "proj", "run1", "a.txt")
    assert http.get(url, allow_redirects=False).status_code == 401
    assert http.get(url, auth=("api", "y" * 40), allow_redirects=False).status_code == 401
    srv.strict_auth = False
    resp = gql(srv, http, "{ viewer { id } }", key="x" * 40)
    assert resp.status_code == 200 and resp.json()["data"]["viewer"] is None


# --- bytes --------------------------------------------------------------------------
def test_redirect_and_ranges(srv, http):
    body = bytes(range(256)) * 40
    srv.put_file("alice", "proj", "run1", "dir/data.bin", body)
    resp = http.get(srv.file_url("alice", "proj", "run1", "dir/data.bin"), auth=("api", KEY),
                    allow_redirects=False)
    assert resp.status_code == 302
    signed = resp.headers["Location"]
    assert signed.startswith(f"{srv.storage_url}/") and "expires=" in signed and "sig=" in signed
    full = http.get(signed)
    assert full.status_code == 200 and full.content == body
    assert full.headers["Accept-Ranges"] == "bytes"
    r = http.get(signed, headers={"Range": "bytes=10-19"})
    assert r.status_code == 206 and r.content == body[10:20]
    assert r.headers["Content-Range"] == f"bytes 10-19/{len(body)}"
    r = http.get(signed, headers={"Range": "bytes=10000-"})
    assert r.status_code == 206 and r.content == body[10000:]
    r = http.get(signed, headers={"Range": "bytes=-5"})
    assert r.status_code == 206 and r.content == body[-5:]
    r = http.get(signed, headers={"Range": "bytes=10230-99999"})
    assert r.status_code == 206 and r.content == body[10230:]
    r = http.get(signed, headers={"Range": f"bytes={len(body)}-"})
    assert r.status_code == 416 and r.headers["Content-Range"] == f"bytes */{len(body)}"
    head = http.head(signed)
    assert head.status_code == 200 and head.headers["Content-Length"] == str(len(body))
    # Following the redirect with requests: the Authorization header is dropped for the new port.
    followed = http.get(srv.file_url("alice", "proj", "run1", "dir/data.bin"), auth=("api", KEY))
    assert followed.content == body


def test_parse_range():
    assert parse_range("bytes=0-0", 10) == (0, 1)
    assert parse_range("bytes=5-", 10) == (5, 10)
    assert parse_range("bytes=-3", 10) == (7, 10)
    assert parse_range("bytes=-30", 10) == (0, 10)
    assert parse_range("bytes=10-", 10) == "unsatisfiable"
    assert parse_range("bytes=-0", 10) == "unsatisfiable"
    assert parse_range("bytes=0-", 0) == "unsatisfiable"
    assert parse_range("bytes=5-2", 10) is None
    assert parse_range("bytes=0-1,3-4", 10) is None
    assert parse_range("items=0-1", 10) is None


def test_expired_and_forged_urls_are_403(srv, http):
    rec = srv.put_file("alice", "proj", "run1", "a.txt", b"hello")
    srv.url_ttl_seconds = -1
    r = http.get(srv.signed_url(rec.object_key))
    assert r.status_code == 403 and b"<Code>AccessDenied</Code>" in r.content
    srv.url_ttl_seconds = 3600
    good = srv.signed_url(rec.object_key)
    assert http.get(good).content == b"hello"
    forged = good[:-4] + ("0000" if not good.endswith("0000") else "1111")
    r = http.get(forged)
    assert r.status_code == 403 and b"SignatureDoesNotMatch" in r.content
    d = data(srv, http, FILES_QUERY, {"e": "alice", "p": "proj", "r": "run1"})
    assert http.get(d["project"]["run"]["files"]["edges"][0]["node"]["directUrl"]).content == b"hello"


@pytest.mark.parametrize("name", [
    "with space.txt", "brackets[1]*:@.txt", "ünïcødé/日本語.txt", "../up.txt", "a/../b.txt", "/leading.txt",
    "a//b.txt", "x/./y.txt", "50%?#&=+.txt", "ctrl\x01\x7f.txt", "trailing/", "n" * 300,
])
def test_weird_names_round_trip_through_file_urls(srv, http, name):
    srv.put_file("alice", "proj", "run1", name, name.encode("utf-8", "surrogatepass"))
    srv.put_file("alice", "proj", "run1", "decoy.txt", b"decoy")
    d = data(srv, http, FILES_QUERY, {"e": "alice", "p": "proj", "r": "run1", "names": [name]})
    node = d["project"]["run"]["files"]["edges"][0]["node"]
    assert node["name"] == name
    resp = http.get(node["url"], auth=("api", KEY))
    assert resp.status_code == 200 and resp.content == name.encode("utf-8")


def test_generated_content_is_deterministic_and_offset_sensitive(srv, http):
    size = 3 * 2**20 + 12345
    srv.put_file("alice", "proj", "run1", "gen.bin", Generated(size, seed=5))
    whole = generated_bytes(5, 0, size)
    assert len(whole) == size
    assert generated_bytes(5, 2**20 - 3, 2**20 + 3) == whole[2**20 - 3 : 2**20 + 3]
    assert generated_bytes(5, 0, 64) != generated_bytes(5, 2**20, 2**20 + 64)  # one block off
    assert generated_bytes(5, 0, 64) != generated_bytes(5, 1, 65)
    assert generated_bytes(5, 0, 64) != generated_bytes(6, 0, 64)
    assert generated_md5_b64(5, size) == md5_b64_of(whole)
    rec = srv.store.file("alice", "proj", "run1", "gen.bin")
    r = http.get(srv.signed_url(rec.object_key), headers={"Range": "bytes=1048570-2097160"})
    assert r.content == whole[1048570:2097161]
    assert http.get(srv.signed_url(rec.object_key)).content == whole
    d = data(srv, http, FILES_QUERY, {"e": "alice", "p": "proj", "r": "run1"})
    assert d["project"]["run"]["files"]["edges"][0]["node"]["md5"] == md5_b64_of(whole)


def test_put_file_again_bumps_updated_at(srv, http):
    first = srv.put_file("alice", "proj", "run1", "live.log", b"line 1\n")
    again = srv.put_file("alice", "proj", "run1", "live.log", b"line 1\nline 2\n")
    assert again.updated_at >= first.updated_at + 1
    assert again.object_key == first.object_key
    d = data(srv, http, FILES_QUERY, {"e": "alice", "p": "proj", "r": "run1"})
    node = d["project"]["run"]["files"]["edges"][0]["node"]
    assert node["sizeBytes"] == 14 and node["md5"] == md5_b64_of(b"line 1\nline 2\n")
    pinned = srv.put_file("alice", "proj", "run1", "live.log", b"x", updated_at="2024-01-01T00:00:00")
    assert pinned.updated_at == 1704067200.0


# --- counters and faults --------------------------------------------------------------
def test_counters(srv, http):
    srv.put_file("alice", "proj", "run1", "a.txt", b"0123456789")
    data(srv, http, FILES_QUERY, {"e": "alice", "p": "proj", "r": "run1"})
    data(srv, http, '{ viewer { id } a: viewer { id } models(entityName: "alice") { edges { cursor } } }')
    http.get(srv.file_url("alice", "proj", "run1", "a.txt"), auth=("api", KEY))
    rec = srv.store.file("alice", "proj", "run1", "a.txt")
    http.get(srv.signed_url(rec.object_key), headers={"Range": "bytes=0-3"})
    http.get(srv.signed_url(rec.object_key), headers={"Authorization": "Basic leak"})
    http.get(f"{srv.base_url}/_wfs/stats")  # control calls are not counted
    s = srv.stats()
    assert s["graphql_requests"] == 2
    assert s["graphql_ops"] == {"project": 1, "viewer": 2, "models": 1}
    assert s["file_url_requests"] == 1
    assert s["storage_requests"] == 3 and s["range_requests"] == 1
    assert s["bytes_served"] == 10 + 4 + 10
    assert s["bytes_by_file"] == {"alice/proj/run1/a.txt": 24}
    assert s["storage_auth_headers"] == 1  # only the one we sent on purpose
    assert s["status_counts"] == {200: 4, 302: 1, 206: 1}
    srv.reset_stats()
    assert srv.stats()["graphql_requests"] == 0 and srv.stats()["bytes_by_file"] == {}


def _statuses(n=30, **faults):
    server = WandbTestServer(api_keys={KEY: "alice"})
    server.set_faults(seed=123, **faults)
    with server, requests.Session() as http:
        out = []
        for _ in range(n):
            resp = http.post(f"{server.base_url}/graphql", json={"query": "{ viewer { id } }"},
                             auth=("api", KEY))
            out.append(resp.status_code)
            if resp.status_code == 429:
                assert resp.headers["Retry-After"] == "2" and resp.headers["RateLimit-Reset"] == "2"
    return out


def test_faults_are_deterministic():
    first = _statuses(error_rate=0.3, rate_limit_rate=0.3, retry_after_seconds=2, targets=["graphql"])
    assert first == _statuses(error_rate=0.3, rate_limit_rate=0.3, retry_after_seconds=2, targets=["graphql"])
    assert {200, 429, 500} <= set(first)
    assert _statuses(n=5, error_count=2, rate_limit_count=1, retry_after_seconds=2) == [500, 500, 429, 200, 200]
    assert set(_statuses(n=10, error_rate=1.0, targets=["storage"])) == {200}  # other targets untouched


def test_truncated_storage_bodies_and_latency(srv, http):
    rec = srv.put_file("alice", "proj", "run1", "a.bin", Generated(4 * 2**20, seed=1))
    srv.set_faults(truncate_rate=1.0, targets="storage")
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        http.get(srv.signed_url(rec.object_key))
    assert 0 < srv.stats()["bytes_served"] < 4 * 2**20
    srv.set_faults(latency_seconds=0.2, targets=["files"])
    t0 = time.monotonic()
    http.get(srv.file_url("alice", "proj", "run1", "a.bin"), auth=("api", KEY), allow_redirects=False)
    assert time.monotonic() - t0 >= 0.2
    srv.clear_faults()
    with pytest.raises(ValueError):
        srv.set_faults(targets=["nope"])


# --- control, lifecycle, data loading ---------------------------------------------------
def test_control_endpoints(srv, http):
    base = f"{srv.base_url}/_wfs"
    r = http.post(f"{base}/put_file", json={"entity": "alice", "project": "p", "run_id": "r",
                                           "name": "x.txt", "content_b64": base64.b64encode(b"hi").decode()})
    assert r.status_code == 200
    http.post(f"{base}/put_file", json={"entity": "alice", "project": "p", "run_id": "r",
                                       "name": "g.bin", "generated": {"size": 100, "seed": 3}})
    assert srv.store.file("alice", "p", "r", "g.bin").content.read() == generated_bytes(3, 0, 100)
    assert http.post(f"{base}/run_state", json={"entity": "alice", "project": "p", "run_id": "r",
                                                "state": "running"}).status_code == 200
    assert srv.store.run("alice", "p", "r").state == "running"
    assert http.post(f"{base}/faults", json={"error_count": 1, "targets": ["graphql"]}).status_code == 200
    assert gql(srv, http, "{ viewer { id } }").status_code == 500
    assert http.get(f"{base}/stats").json()["status_counts"] == {"500": 1}
    assert http.post(f"{base}/reset").status_code == 200
    assert srv.stats()["graphql_requests"] == 0
    assert http.post(f"{base}/put_file", json={"entity": "alice"}).status_code == 400
    assert http.get(f"{base}/nope").status_code == 404


def test_stop_and_restart_on_same_ports(http):
    server = WandbTestServer(api_keys={KEY: "alice"}).start()
    try:
        server.put_file("alice", "p", "r", "a.txt", b"data")
        ports = (server.port, server.storage_port)
        assert gql(server, http, "{ viewer { id } }").status_code == 200  # keep-alive connection open
        server.stop()
        with pytest.raises(requests.exceptions.ConnectionError):
            gql(server, http, "{ viewer { id } }")
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", ports[0]), timeout=1).close()
        server.start()
        assert (server.port, server.storage_port) == ports
        assert gql(server, http, "{ viewer { id } }").status_code == 200
        assert http.get(server.file_url("alice", "p", "r", "a.txt"), auth=("api", KEY)).content == b"data"
    finally:
        server.stop()


def test_load_tree(tmp_path, srv, http):
    run_dir = tmp_path / "ent" / "proj" / "abc123"
    (run_dir / "media" / "images").mkdir(parents=True)
    (run_dir / "media" / "images" / "x.png").write_bytes(b"png!")
    (run_dir / "output.log").write_text("hello\n")
    (run_dir / "_wfs_run.json").write_text(json.dumps({
        "state": "running", "displayName": "my-run", "createdAt": "2024-05-01T00:00:00",
        "generated": {"files/model.ckpt": {"size": 1000, "seed": 9}}}))
    (tmp_path / "ent" / "proj" / "empty-run").mkdir()
    assert srv.load_tree(str(tmp_path)) == 3
    run = srv.store.run("ent", "proj", "abc123")
    assert (run.state, run.display_name) == ("running", "my-run")
    files = srv.store.files("ent", "proj", "abc123")
    assert sorted(files) == ["files/model.ckpt", "media/images/x.png", "output.log"]
    assert srv.store.run("ent", "proj", "empty-run").state == "finished"
    r = http.get(srv.file_url("ent", "proj", "abc123", "files/model.ckpt"), auth=("api", KEY))
    assert r.content == generated_bytes(9, 0, 1000)
    assert http.get(srv.file_url("ent", "proj", "abc123", "output.log"), auth=("api", KEY)).text == "hello\n"


def _png_chunks(blob: bytes):
    assert blob[:8] == b"\x89PNG\r\n\x1a\n"
    pos, out = 8, []
    while pos < len(blob):
        (length,) = struct.unpack(">I", blob[pos : pos + 4])
        kind, payload = blob[pos + 4 : pos + 8], blob[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", blob[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + payload)
        out.append((kind, payload))
        pos += 12 + length
    return out


def test_sample_tree(tmp_path):
    build_sample(str(tmp_path))
    srv = WandbTestServer()
    srv.load_tree(str(tmp_path))
    runs = {r.run_id: r for e, p in (("demo-user", "mnist-classifier"), ("demo-user", "llm-finetune"),
                                      ("demo-team", "shared-baselines")) for r in srv.store.runs(e, p)}
    assert len(runs) == 5
    assert sorted(r.state for r in runs.values()).count("running") == 1
    files = srv.store.files("demo-user", "mnist-classifier", "2x9k4d1a")
    assert files["files/model.ckpt"].size_bytes >= 100 * 10**6
    assert files["empty.txt"].size_bytes == 0
    assert any(" " in n and not n.isascii() for n in files)
    assert "_wfs_run.json" not in files
    pngs = [n for n in files if n.endswith(".png")]
    assert pngs
    for name in pngs:
        blob = b"".join(files[name].content.iter_range(0, files[name].size_bytes))
        kinds = [k for k, _ in _png_chunks(blob)]
        assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND"
    table = json.loads(b"".join(files["media/table/predictions_0_1a2b3c.table.json"].content.iter_range(0, 10**6)))
    assert table["columns"] and len(table["data"][0]) == len(table["columns"])


def test_cli_ready_file_and_sigterm(tmp_path):
    ready = tmp_path / "ready.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "wfs.testing.server", "--sample", str(tmp_path / "data"),
         "--ready-file", str(ready), "--page-cap", "5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__)))),
    )
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        info = json.loads(ready.read_text())
        assert info["pid"] == proc.pid
        from wfs.testing import DEMO_API_KEY
        resp = requests.post(f"{info['base_url']}/graphql", auth=("api", DEMO_API_KEY), timeout=10,
                             json={"query": "{ viewer { entity teams { edges { node { name } } } } }"})
        assert resp.json()["data"]["viewer"] == {"entity": "demo-user",
                                                 "teams": {"edges": [{"node": {"name": "demo-team"}}]}}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert not ready.exists()
        assert b"Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("style, expected", [
    ("plain", "2024-01-01T00:00:00"), ("z", "2024-01-01T00:00:00Z"), ("micros", "2024-01-01T00:00:00.250000Z"),
])
def test_time_styles(srv, http, style, expected):
    srv.time_style = style
    srv.put_file("alice", "proj", "run1", "a", b"1", updated_at=1704067200.25)
    d = data(srv, http, FILES_QUERY, {"e": "alice", "p": "proj", "r": "run1"})
    assert d["project"]["run"]["files"]["edges"][0]["node"]["updatedAt"] == expected


def test_add_run_with_files_and_file_info(srv):
    srv.add_run("alice", "proj", "r1", state="running", files={"a.txt": b"abc", "g.bin": Generated(10, seed=1)})
    info = srv.file_info("alice", "proj", "r1", "a.txt")
    assert info["size_bytes"] == 3 and info["md5"] == md5_b64_of(b"abc")
    assert info["updated_at"] == int(info["updated_at"])  # whole seconds, as the API reports them
    assert srv.file_info("alice", "proj", "r1", "g.bin")["size_bytes"] == 10
    assert srv.store.run("alice", "proj", "r1").state == "running"
    with pytest.raises(KeyError):
        srv.file_info("alice", "proj", "r1", "nope")
