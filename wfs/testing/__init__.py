"""wfs.testing: a W&B-compatible local server for tests, the demo and benchmarks.

It shares no code with ``wfs.client`` so that one misunderstanding of the W&B
API cannot hide in both. Modules: ``server`` (WandbTestServer, CLI),
``graphql_api`` (schema + resolvers), ``api_http`` (API port), ``storage``
(signed URLs, storage port), ``store`` (data), ``content`` (file bodies),
``stats``, ``faults``, ``sample`` (demo data).
"""

from wfs.testing.content import Generated, generated_bytes, generated_md5_b64, md5_b64_of

_FROM_SERVER = ("DEMO_API_KEY", "DEMO_TEAM", "DEMO_USER", "WandbTestServer")


def __getattr__(name: str):
    # Lazy, so `python -m wfs.testing.server` does not import the module twice.
    if name in _FROM_SERVER:
        from wfs.testing import server

        return getattr(server, name)
    raise AttributeError(name)


__all__ = [
    "DEMO_API_KEY",
    "DEMO_TEAM",
    "DEMO_USER",
    "Generated",
    "WandbTestServer",
    "generated_bytes",
    "generated_md5_b64",
    "md5_b64_of",
]
