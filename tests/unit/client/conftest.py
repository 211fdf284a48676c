"""Fixtures for client tests: a scripted in-memory web and clients wired to it."""

from __future__ import annotations

import pytest

from client_fakeweb import FakeWeb
from wfs.client import WandbClient

BASE = "https://api.test"
KEY = "k" * 40


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "*")


@pytest.fixture
def web() -> FakeWeb:
    return FakeWeb()


@pytest.fixture
def make_client(web):
    made: list[WandbClient] = []

    def make(base_url: str = BASE, **kwargs) -> WandbClient:
        kwargs.setdefault("backoff_factor_seconds", 0.0)
        kwargs.setdefault("backoff_max_seconds", 0.0)
        client = WandbClient(base_url, KEY, **kwargs)
        web.install(client._session)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def client(make_client) -> WandbClient:
    return make_client()
