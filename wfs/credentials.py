"""Find the W&B base URL and API key the way the wandb SDK does (read-only).

Order, first hit wins:

* base URL: explicit option, ``WANDB_BASE_URL``, ``base_url`` in the wandb
  settings file (``$WANDB_CONFIG_DIR/settings``, else
  ``~/.config/wandb/settings``, INI section ``[default]``), else
  ``https://api.wandb.ai``.
* API key: explicit option, ``WANDB_API_KEY``, then netrc (``$NETRC``, else
  ``~/.netrc``) with ``machine`` = the base URL's host *including the port*
  (``127.0.0.1:8080``); the key is the ``password`` field.

Invariants: nothing here writes or rewrites credential files; no message,
log line or exception ever contains an API key; every failure is a
``CredentialsError`` (or ``ValueError`` for a bad URL) with a message a user
can act on, never a bare traceback from ``netrc``/``configparser``.
Only the CLI (or the Python API) calls this module; nothing below it reads
the environment.
"""

from __future__ import annotations

import configparser
import logging
import netrc
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from wfs.client.errors import WandbError

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.wandb.ai"

# At least 40 characters of [A-Za-z0-9_-], optionally after an on-prem ``prefix-``.
_API_KEY_RE = re.compile(r"(?:[A-Za-z0-9_.]+-)?[A-Za-z0-9_-]{40,}")


class CredentialsError(WandbError):
    """No usable API key was found (missing, malformed, or unreadable netrc)."""


def _home(env: Mapping[str, str]) -> Path:
    home = env.get("HOME")
    return Path(home) if home else Path(os.path.expanduser("~"))


def settings_path(env: Mapping[str, str] = os.environ) -> Path:
    """The wandb settings file: ``$WANDB_CONFIG_DIR/settings`` or ``~/.config/wandb/settings``."""
    config_dir = env.get("WANDB_CONFIG_DIR")
    if config_dir:
        return Path(config_dir).expanduser() / "settings"
    return _home(env) / ".config" / "wandb" / "settings"


def netrc_path(env: Mapping[str, str] = os.environ) -> Path:
    """The netrc file: ``$NETRC`` or ``~/.netrc``."""
    path = env.get("NETRC")
    if path:
        return Path(path).expanduser()
    return _home(env) / ".netrc"


def _settings_base_url(env: Mapping[str, str]) -> str | None:
    path = settings_path(env)
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as fh:
            parser.read_file(fh)
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the wandb settings file {path}: {exc}") from None
    except configparser.Error as exc:
        raise ValueError(f"cannot parse the wandb settings file {path}: {exc}") from None
    value = parser.get("default", "base_url", fallback=None)
    return value.strip() if value and value.strip() else None


def normalize_base_url(url: str) -> str:
    """Strip whitespace and trailing ``/``; require an http(s) URL with a host."""
    text = url.strip().rstrip("/")
    parts = urlsplit(text)
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(
            f"W&B base URL must start with http:// or https://, got {text!r} "
            "(set --base-url or WANDB_BASE_URL, e.g. https://api.wandb.ai)"
        )
    if not parts.hostname:
        raise ValueError(f"W&B base URL has no host: {text!r}")
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError:
        raise ValueError(f"W&B base URL has an invalid port: {text!r}") from None
    if parts.query or parts.fragment:
        raise ValueError(f"W&B base URL must not have a query or fragment: {text!r}")
    return text


def resolve_base_url(option: str | None = None, env: Mapping[str, str] = os.environ) -> str:
    """The W&B base URL: option, ``WANDB_BASE_URL``, settings file, else the public default."""
    for candidate in (option, env.get("WANDB_BASE_URL")):
        if candidate and candidate.strip():
            return normalize_base_url(candidate)
    from_settings = _settings_base_url(env)
    if from_settings:
        return normalize_base_url(from_settings)
    return DEFAULT_BASE_URL


def netrc_machine(base_url: str) -> str:
    """The netrc ``machine`` for a base URL: its host, plus ``:port`` when the URL has one."""
    netloc = urlsplit(base_url).netloc
    return netloc.rpartition("@")[2].lower()


def _check_key(key: str, source: str, host: str) -> str:
    key = key.strip()
    if not _API_KEY_RE.fullmatch(key):
        raise CredentialsError(
            f"the W&B API key from {source} for {host} is malformed "
            f"({len(key)} characters; expected at least 40 of A-Z, a-z, 0-9, '_' or '-', "
            "optionally after a 'prefix-'). "
            f"Run `wandb login --relogin --host <base URL>` or set WANDB_API_KEY."
        )
    return key


def _netrc_key(path: Path, machine: str) -> str | None:
    try:
        parsed = netrc.netrc(str(path))
    except FileNotFoundError:
        return None
    except netrc.NetrcParseError as exc:
        where = f" line {exc.lineno}" if exc.lineno else ""
        raise CredentialsError(f"cannot parse the netrc file {path}{where}: {exc.msg}") from None
    except PermissionError:
        raise CredentialsError(
            f"cannot read the netrc file {path}: permission denied "
            f"(it should belong to you with mode 600: chmod 600 {path})"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialsError(f"cannot read the netrc file {path}: {exc}") from None
    try:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            logger.warning("netrc file %s is readable by others; run: chmod 600 %s", path, path)
    except OSError:
        pass
    # Exact machine only: no "default" entry, no port-less fallback, so a key
    # is never sent to a host it was not written for.
    entry = parsed.hosts.get(machine)
    if entry is None:
        return None
    password = entry[2]
    if not password:
        raise CredentialsError(f"the netrc file {path} has an entry for machine {machine} but no password (API key)")
    return password


def resolve_api_key(base_url: str, option: str | None = None, env: Mapping[str, str] = os.environ) -> str:
    """The API key for ``base_url``: option, ``WANDB_API_KEY``, then netrc keyed by host[:port]."""
    machine = netrc_machine(base_url)
    if option and option.strip():
        return _check_key(option, "the --api-key option", machine)
    from_env = env.get("WANDB_API_KEY")
    if from_env and from_env.strip():
        return _check_key(from_env, "WANDB_API_KEY", machine)
    path = netrc_path(env)
    from_netrc = _netrc_key(path, machine)
    if from_netrc:
        return _check_key(from_netrc, f"the netrc file {path}", machine)
    raise CredentialsError(
        f"no W&B API key for {machine}: looked at the --api-key option, WANDB_API_KEY "
        f"and machine {machine!r} in {path}. "
        f"Run `wandb login --host {base_url}` or set WANDB_API_KEY."
    )
