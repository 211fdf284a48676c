"""The real ``wandb`` SDK against wfs.testing's server: proof the server is faithful.

Everything the SDK could touch (config dir, cache, HOME, netrc) points into a
temporary directory, so the user's real W&B settings are never read or written.
"""

from __future__ import annotations

import hashlib

import pytest

from wfs.testing import Generated, WandbTestServer, generated_bytes

pytestmark = pytest.mark.timeout(240)

KEY = "c0nf0rmance" + "0123456789" * 3  # 41 chars of [A-Za-z0-9]
ENTITY, PROJECT, RUN = "alice", "conformance", "abc123xy"


def _body(name: str, i: int) -> bytes:
    return (f"{name}\n".encode() * (i + 1))[: 100 + 37 * i]


NAMES = (
    [f"file_{i:02d}.txt" for i in range(12)]
    + ["media/images/sample_0_ab12.png", "media/table/preds_3_cd.table.json",
       "deep/nested/dir/config.yaml", "notes/résumé des essais.txt", "empty.txt"]
)


@pytest.fixture(scope="module")
def sdk_env(tmp_path_factory):
    home = tmp_path_factory.mktemp("wandb-home")
    with pytest.MonkeyPatch.context() as mp:
        for var in ("WANDB_CONFIG_DIR", "WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR",
                    "WANDB_ARTIFACT_DIR"):
            path = home / var.lower()
            path.mkdir()
            mp.setenv(var, str(path))
        mp.setenv("HOME", str(home))
        mp.setenv("NETRC", str(home / "netrc"))
        mp.setenv("WANDB_SILENT", "true")
        mp.delenv("WANDB_MODE", raising=False)
        mp.delenv("WANDB_ENTITY", raising=False)
        mp.delenv("WANDB_PROJECT", raising=False)
        yield mp


@pytest.fixture(scope="module")
def server(sdk_env):
    srv = WandbTestServer(api_keys={KEY: ENTITY}, teams={ENTITY: ["team-a"]}, page_cap=4)
    for i, name in enumerate(NAMES):
        srv.put_file(ENTITY, PROJECT, RUN, name, b"" if name == "empty.txt" else _body(name, i))
    srv.put_file(ENTITY, PROJECT, RUN, "files/model.ckpt", Generated(3 * 2**20 + 17, seed=11))
    srv.add_run(ENTITY, PROJECT, RUN, display_name="fluent-sun-1", state="finished",
                created_at="2024-03-01T10:00:00", config={"lr": {"value": 0.01}}, summary={"loss": 0.5})
    srv.add_run(ENTITY, PROJECT, "zz99yy88", display_name="second", state="running",
                created_at="2024-03-02T10:00:00")
    srv.add_run(ENTITY, "other-project", "r0", created_at="2024-01-01T00:00:00")
    with srv:
        sdk_env.setenv("WANDB_BASE_URL", srv.base_url)
        sdk_env.setenv("WANDB_API_KEY", KEY)
        yield srv


@pytest.fixture(scope="module")
def api(server):
    wandb = pytest.importorskip("wandb")
    yield wandb.Api(api_key=KEY, overrides={"base_url": server.base_url})
    wandb.teardown()


def _expected(server) -> dict[str, bytes]:
    files = server.store.files(ENTITY, PROJECT, RUN)
    return {name: b"".join(bytes(p) for p in rec.content.iter_range(0, rec.size_bytes))
            for name, rec in files.items()}


def test_run_loads(api):
    run = api.run(f"{ENTITY}/{PROJECT}/{RUN}")
    assert run.id == RUN
    assert run.name == "fluent-sun-1"
    assert run.state == "finished"
    assert run.config == {"lr": 0.01}
    assert run.summary["loss"] == 0.5


def test_files_across_pages(api, server):
    server.reset_stats()
    expected = _expected(server)
    files = list(api.run(f"{ENTITY}/{PROJECT}/{RUN}").files(per_page=3))
    assert sorted(f.name for f in files) == sorted(expected)
    assert {f.name: f.size for f in files} == {n: len(b) for n, b in expected.items()}
    # page_cap 4 > per_page 3: one query per 3 files.
    assert server.stats()["graphql_ops"].get("project", 0) >= len(expected) // 3
    assert len(api.run(f"{ENTITY}/{PROJECT}/{RUN}").files()) == len(expected)  # fileCount


def test_files_default_page_size_is_capped(api, server):
    files = list(api.run(f"{ENTITY}/{PROJECT}/{RUN}").files())  # asks for 50, gets 4 a page
    assert len(files) == len(_expected(server))


def test_files_by_name_and_pattern(api):
    run = api.run(f"{ENTITY}/{PROJECT}/{RUN}")
    got = [f.name for f in run.files(names=["deep/nested/dir/config.yaml", "no-such-file"])]
    assert got == ["deep/nested/dir/config.yaml"]
    assert sorted(f.name for f in run.files(pattern="media/%")) == [
        "media/images/sample_0_ab12.png", "media/table/preds_3_cd.table.json"]


def test_download_is_byte_identical(api, server, tmp_path):
    server.reset_stats()
    expected = _expected(server)
    wanted = ["deep/nested/dir/config.yaml", "files/model.ckpt", "notes/résumé des essais.txt",
              "empty.txt", "file_03.txt"]
    run = api.run(f"{ENTITY}/{PROJECT}/{RUN}")
    for f in run.files(names=wanted):
        f.download(root=str(tmp_path), replace=True).close()
    for name in wanted:
        got = (tmp_path / name).read_bytes()
        assert hashlib.sha256(got).hexdigest() == hashlib.sha256(expected[name]).hexdigest(), name
    assert (tmp_path / "files/model.ckpt").read_bytes()[:1000] == generated_bytes(11, 0, 1000)
    stats = server.stats()
    assert stats["file_url_requests"] >= len(wanted)
    assert stats["storage_auth_headers"] == 0  # the SDK never sends the key to storage


def test_projects_and_runs(api):
    names = sorted(p.name for p in api.projects(ENTITY, per_page=1))
    assert names == ["conformance", "other-project"]
    runs = list(api.runs(f"{ENTITY}/{PROJECT}", per_page=1))  # the SDK sends +created_at
    assert [r.id for r in runs] == [RUN, "zz99yy88"]
    assert [r.name for r in runs] == ["fluent-sun-1", "second"]
    runs = list(api.runs(f"{ENTITY}/{PROJECT}", order="-created_at"))
    assert [r.id for r in runs] == ["zz99yy88", RUN]
    assert [r.id for r in api.runs(f"{ENTITY}/{PROJECT}", filters={"state": "running"})] == ["zz99yy88"]


def test_viewer(api):
    assert api.default_entity == ENTITY
    assert api.viewer.username == ENTITY


def test_bad_key_is_rejected(api, server):
    import wandb

    with pytest.raises(wandb.errors.AuthenticationError):
        wandb.Api(api_key="b" * 40, overrides={"base_url": server.base_url})


def test_unknown_run_is_not_found(api):
    import wandb

    with pytest.raises(wandb.errors.CommError):
        api.run(f"{ENTITY}/{PROJECT}/no-such-run")


def test_sdk_retries_through_an_injected_500(api, server):
    server.reset_stats()
    server.set_faults(error_count=1, targets=["graphql"])
    try:
        assert api.run(f"{ENTITY}/other-project/r0").id == "r0"  # not cached by the Api yet
    finally:
        server.clear_faults()
    assert server.stats()["status_counts"].get(500) == 1
