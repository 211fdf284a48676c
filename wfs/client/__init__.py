"""The W&B client: GraphQL listings and byte ranges; knows nothing of FUSE or caches.

``WandbClient`` is the one entry point; ``models`` holds the records it
returns and ``errors`` the exceptions it raises (tree in ``errors``'s docstring).
"""

from wfs.client.api import ClientStats, WandbClient
from wfs.client.errors import (
    AuthError,
    BadResponse,
    NotFound,
    RateLimited,
    TransientError,
    Unreachable,
    UrlExpired,
    WandbError,
)
from wfs.client.models import FINISHED_STATES, Project, Run, RunFile, Viewer, parse_wandb_time

__all__ = [
    "AuthError",
    "BadResponse",
    "ClientStats",
    "FINISHED_STATES",
    "NotFound",
    "Project",
    "RateLimited",
    "Run",
    "RunFile",
    "TransientError",
    "Unreachable",
    "UrlExpired",
    "Viewer",
    "WandbClient",
    "WandbError",
    "parse_wandb_time",
]
