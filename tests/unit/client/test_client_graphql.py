"""WandbClient GraphQL: requests sent, pagination, parsing, error mapping."""

from __future__ import annotations

import base64
import logging

import time

import pytest

from client_fakeweb import Reply, gql
from conftest import BASE, KEY
from wfs.client import AuthError, BadResponse, NotFound, RunFile, parse_wandb_time

GRAPHQL = f"{BASE}/graphql"


def file_node(name, *, md5="bWQ1", size=3, cursor=None, **extra):
    node = {
        "id": f"id-{name}",
        "name": name,
        "url": f"{BASE}/files/e/p/r/{name}",
        "directUrl": f"https://storage.test/bucket/{name}?sig=SECRET",
        "sizeBytes": size,
        "mimetype": "text/plain",
        "updatedAt": "2023-11-05T17:46:35Z",
        "md5": md5,
    }
    node.update(extra)
    return {"node": node, "cursor": cursor or f"cur-{name}"}


def files_page(edges, has_next, end_cursor=None):
    return gql({"project": {"run": {"files": {
        "edges": edges, "pageInfo": {"endCursor": end_cursor, "hasNextPage": has_next}}}}})


def test_request_shape_auth_header_and_timeouts(web, make_client):
    client = make_client(connect_timeout_seconds=3, read_timeout_seconds=7)
    web.on("POST", GRAPHQL, gql({"project": {"id": "P1", "name": "p", "entityName": "e",
                                             "createdAt": "2023-01-02T03:04:05"}}))
    project = client.project("e", "p")
    assert project.entity == "e" and project.name == "p"
    assert project.created_at == parse_wandb_time("2023-01-02T03:04:05Z")
    (req,) = web.requests
    assert req.method == "POST" and req.url == GRAPHQL
    expected = "Basic " + base64.b64encode(f"api:{KEY}".encode()).decode()
    assert req.headers["Authorization"] == expected
    assert req.timeout == (3, 7)
    body = req.json()
    assert set(body) == {"query", "variables"}
    assert body["query"].lstrip().startswith("query Project(")
    assert body["variables"] == {"entity": "e", "project": "p"}
    assert client.stats().graphql_requests == 1
    assert client.host == "api.test"


def test_run_files_three_pages_send_cursor_back(web, client):
    pages = {
        None: files_page([file_node("a"), file_node("b")], True),
        "cur-b": files_page([file_node("c")], True),
        "cur-c": files_page([file_node("d", size="5368709120")], False),
    }
    web.on("POST", GRAPHQL, lambda req: pages[req.json()["variables"]["after"]])
    files = list(client.iter_run_files("e", "p", "r"))
    assert [f.name for f in files] == ["a", "b", "c", "d"]
    assert files[3].size_bytes == 5368709120
    sent = [r.json()["variables"] for r in web.requests]
    assert [v["after"] for v in sent] == [None, "cur-b", "cur-c"]
    assert all(v["first"] == 1000 and v["names"] == [] and v["run"] == "r" for v in sent)
    assert web.requests[0].json()["query"].lstrip().startswith("query RunFiles(")


def test_end_cursor_used_when_edges_have_no_cursor(web, client):
    first = files_page([{"node": file_node("a")["node"]}], True, end_cursor="E1")
    second = files_page([file_node("b")], False)
    web.on("POST", GRAPHQL, lambda req: {None: first, "E1": second}[req.json()["variables"]["after"]])
    assert [f.name for f in client.iter_run_files("e", "p", "r")] == ["a", "b"]
    assert len(web.requests) == 2


@pytest.mark.parametrize("asked, sent", [(5000, 1000), (0, 1), (50, 50)])
def test_first_is_clamped(web, make_client, asked, sent):
    client = make_client(page_size=asked)
    web.on("POST", GRAPHQL, files_page([file_node("a")], False))
    list(client.iter_run_files("e", "p", "r"))
    assert web.requests[0].json()["variables"]["first"] == sent


def test_empty_page_with_has_next_page_stops(web, client, caplog):
    web.on("POST", GRAPHQL, files_page([file_node("a")], True), files_page([], True, end_cursor="X"))
    with caplog.at_level(logging.WARNING):
        names = [f.name for f in client.iter_run_files("e", "p", "r")]
    assert names == ["a"]
    assert len(web.requests) == 2
    assert "no edges" in caplog.text


def test_non_advancing_cursor_stops(web, client, caplog):
    web.on("POST", GRAPHQL, files_page([file_node("a", cursor="same")], True),
           files_page([file_node("b", cursor="same")], True))
    with caplog.at_level(logging.WARNING):
        names = [f.name for f in client.iter_run_files("e", "p", "r")]
    assert names == ["a", "b"]
    assert len(web.requests) == 2
    assert "did not advance" in caplog.text


def test_iter_runs_asks_for_the_next_page_while_this_one_is_read(web, client):
    def page(req):
        v = req.json()["variables"]
        assert v["filters"] == "{}" and v["order"] == "+created_at"
        if v["after"] is None:
            edges = [{"node": {"id": "S1", "name": "r1", "displayName": "happy-cat-1", "state": "finished",
                               "createdAt": "2023-11-05T17:46:35.1Z", "heartbeatAt": None}, "cursor": "c1"}]
            return gql({"project": {"runs": {"edges": edges, "pageInfo": {"endCursor": "c1", "hasNextPage": True}}}})
        edges = [{"node": {"id": "S2", "name": "r2", "displayName": None, "state": "running",
                           "createdAt": "2023-11-05T17:46:36", "heartbeatAt": "2023-11-05T18:00:00+01:00"},
                  "cursor": "c2"}]
        return gql({"project": {"runs": {"edges": edges, "pageInfo": {"endCursor": "c2", "hasNextPage": False}}}})

    web.on("POST", GRAPHQL, page)
    runs = client.iter_runs("e", "p")
    assert web.requests == []  # nothing before the first run is asked for
    first = next(runs)
    deadline = time.monotonic() + 5
    while len(web.requests) < 2:  # page 2 is on its way before page 1 is used up
        assert time.monotonic() < deadline
        time.sleep(0.005)
    assert (first.run_id, first.display_name, first.storage_id, first.is_finished) == ("r1", "happy-cat-1", "S1", True)
    assert first.created_at == pytest.approx(1699206395.1)
    second = next(runs)
    assert second.run_id == "r2" and not second.is_finished
    assert second.heartbeat_at == 1699203600.0  # 18:00+01:00 == 17:00Z
    assert list(runs) == []
    assert len(web.requests) == 2


def test_iter_projects(web, client):
    edges = [{"node": {"id": "1", "name": "p1", "entityName": "e", "createdAt": "2023-01-01T00:00:00Z"},
              "cursor": "c1"}]
    web.on("POST", GRAPHQL, gql({"models": {"edges": edges, "pageInfo": {"endCursor": "c1", "hasNextPage": False}}}))
    assert [(p.entity, p.name) for p in client.iter_projects("e")] == [("e", "p1")]
    v = web.requests[0].json()["variables"]
    assert v["entity"] == "e" and v["first"] == 1000 and v["after"] is None


def test_file_node_parsing_and_placeholder_dropped(web, client):
    edges = [
        file_node("real.txt", md5=None, size="12", url=None, mimetype=None,
                  updatedAt="2023-11-05T17:46:35.123456789"),
        file_node("ghost.txt", md5="0"),
    ]
    web.on("POST", GRAPHQL, files_page(edges, False))
    files = list(client.iter_run_files("e", "p", "r"))
    assert files == [RunFile(
        entity="e", project="p", run_id="r", name="real.txt", size_bytes=12,
        updated_at=pytest.approx(1699206395.123456), md5=None, url=None,
        direct_url="https://storage.test/bucket/real.txt?sig=SECRET", mimetype=None, file_id="id-real.txt",
    )]


def test_bad_size_is_bad_response(web, client):
    web.on("POST", GRAPHQL, files_page([file_node("a", size="lots")], False))
    with pytest.raises(BadResponse, match="sizeBytes"):
        list(client.iter_run_files("e", "p", "r"))


def test_files_by_name_exact_lookup_drops_placeholders_and_chunks(web, make_client):
    client = make_client(page_size=2)

    def answer(req):
        names = req.json()["variables"]["names"]
        edges = [file_node(n, md5="0" if n == "missing" else "bWQ1") for n in names]
        edges.append(file_node("not-asked"))  # a server that ignores `names` must not leak extras
        return files_page(edges, False)

    web.on("POST", GRAPHQL, answer)
    found = client.files_by_name("e", "p", "r", ["a", "b", "a", "missing", "c", "d"])
    assert [f.name for f in found] == ["a", "b", "c", "d"]
    assert [r.json()["variables"]["names"] for r in web.requests] == [["a", "b"], ["missing", "c"], ["d"]]


def test_graphql_errors_with_data_is_an_error(web, client):
    web.on("POST", GRAPHQL, gql({"project": {"id": "1", "name": "p", "entityName": "e", "createdAt": None}},
                                errors=[{"message": "internal resolver exploded"}]))
    with pytest.raises(BadResponse, match="internal resolver exploded"):
        client.project("e", "p")


def test_graphql_not_found_message_is_not_found(web, client):
    web.on("POST", GRAPHQL, gql(None, errors=[{"message": "project not found"}]))
    with pytest.raises(NotFound, match="e/p"):
        client.project("e", "p")


def test_null_project_and_run_are_not_found(web, client):
    web.on("POST", GRAPHQL, gql({"project": None}), gql({"project": {"run": None}}))
    with pytest.raises(NotFound) as exc:
        client.project("e", "p")
    assert str(exc.value) == "e/p"
    with pytest.raises(NotFound) as exc:
        client.run("e", "p", "r")
    assert str(exc.value) == "e/p/r"


def test_run_files_of_missing_run_is_not_found(web, client):
    web.on("POST", GRAPHQL, gql({"project": {"run": None}}))
    with pytest.raises(NotFound, match="e/p/r"):
        list(client.iter_run_files("e", "p", "r"))


def test_viewer(web, client):
    teams = {"edges": [{"node": {"name": "team-a"}}, {"node": {"name": "team-b"}}]}
    web.on("POST", GRAPHQL, gql({"viewer": {"id": "u1", "entity": "alice", "username": "alice", "teams": teams}}))
    viewer = client.viewer()
    assert (viewer.username, viewer.entity, viewer.teams) == ("alice", "alice", ("team-a", "team-b"))
    assert web.requests[0].json()["query"].startswith("query Viewer")


def test_viewer_null_is_auth_error_naming_host(web, make_client):
    client = make_client("http://127.0.0.1:8080/")
    web.on("POST", "http://127.0.0.1:8080/graphql", gql({"viewer": None}))
    with pytest.raises(AuthError) as exc:
        client.viewer()
    assert "127.0.0.1:8080" in str(exc.value)
    assert KEY not in str(exc.value)
    assert client.base_url == "http://127.0.0.1:8080"


def test_401_is_auth_error_naming_host(web, client):
    web.on("POST", GRAPHQL, Reply(401, b'{"errors":[{"message":"unauthorized"}]}'))
    with pytest.raises(AuthError, match="api.test") as exc:
        client.viewer()
    assert KEY not in str(exc.value)
    assert len(web.requests) == 1  # 401 is not retried


def test_403_and_404_statuses(web, client):
    web.on("POST", GRAPHQL, Reply(403, b"{}"), Reply(404, b"nope"))
    with pytest.raises(AuthError, match="no access to e/p"):
        client.project("e", "p")
    with pytest.raises(NotFound):
        client.project("e", "p")


def test_non_json_answer_is_bad_response(web, client):
    web.on("POST", GRAPHQL, Reply(200, b"<html>proxy login</html>"))
    with pytest.raises(BadResponse):
        client.project("e", "p")


def test_entity_exists(web, client):
    web.on("POST", GRAPHQL, gql({"entity": {"id": "1", "name": "e", "isTeam": False}}), gql({"entity": None}))
    assert client.entity_exists("e") is True
    assert client.entity_exists("nobody") is False
    assert [r.json()["variables"] for r in web.requests] == [{"name": "e"}, {"name": "nobody"}]


@pytest.mark.parametrize("text, expected", [
    ("2023-11-05T17:46:35Z", 1699206395.0),
    ("2023-11-05T17:46:35", 1699206395.0),
    ("2023-11-05T17:46:35.5Z", 1699206395.5),
    ("2023-11-05T17:46:35.123456789", 1699206395.123456),
    ("2023-11-05T17:46:35.123456789Z", 1699206395.123456),
    ("2023-11-05T19:46:35+02:00", 1699206395.0),
    ("2023-11-05T17:46:35.25-01:00", 1699209995.25),
    ("2023-11-05T17:46:35.125", 1699206395.125),
])
def test_parse_wandb_time(text, expected):
    assert parse_wandb_time(text) == pytest.approx(expected, abs=1e-6)
