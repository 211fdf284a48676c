"""Pure functions that turn W&B names into safe POSIX path components.

W&B file names are slash-separated paths written by many SDK versions and
users. The mount shows them as nested folders; this module decides how.

Invariants (property-tested in ``tests/unit/namespace/test_paths.py``):

* a component returned here is never empty, ``.`` or ``..``, never contains
  ``/`` or NUL, and is at most 255 bytes in UTF-8 (``surrogateescape``);
* the mapping of one run's names is deterministic (it depends only on the set
  of names) and the displayed paths are unique within the run;
* nothing here touches the disk: cache paths are derived from content keys,
  never from these names.

The rules, in order:

1. Split on ``/``; drop empty components and ``.`` (``/a//b/./c`` shows as
   ``a/b/c``).
2. ``..`` shows as ``%2E%2E`` so it cannot walk out of the run; NUL shows as
   ``%00``; characters that UTF-8 cannot encode (lone surrogates outside the
   ``surrogateescape`` range) show as ``%uXXXX``.
3. A component longer than 255 bytes keeps its first bytes and ends with
   ``~`` and 8 hex digits of its SHA-1, so long names stay distinct.
4. When a name is both a file and a folder (``a`` and ``a/b``), the folder
   keeps the name and the file shows as ``a~file``.
5. When two W&B names still map to the same path, the first in sorted order
   keeps it and the others get ``~2``, ``~3``, … before their extension.

Run folders are named by run id. Each project folder also offers its runs by
display name, as symlinks to the run-id folder (``display_links``): the
oldest run (by creation time, then run id) with a display name gets the
plain name, later runs with the same display name get ``<name>~<run_id>``,
and so does any name that equals a run id or a probe name. A ``/`` in a
display name shows as ``%2F``.
"""

from __future__ import annotations

import hashlib
from typing import Iterable

NAME_MAX_BYTES = 255
FILE_FOLDER_SUFFIX = "~file"

# Names that programs probe for on every mount (version control, desktop
# shells, Python, Windows autorun). They never exist in W&B and must never
# cost a request.
_PROBE_NAMES = frozenset(
    {
        ".git",
        ".hg",
        ".svn",
        ".bzr",
        ".DS_Store",
        ".hidden",
        ".directory",
        ".localized",
        "autorun.inf",
        "desktop.ini",
        "Thumbs.db",
        "__pycache__",
        ".envrc",
        ".python-version",
        ".venv",
        ".gitignore",
        ".Spotlight-V100",
        ".metadata_never_index",
        ".xdg-volume-info",
    }
)
_PROBE_PREFIXES = ("._", ".Trash", ".nfs", ".goutputstream")


def is_probe_name(component: str) -> bool:
    """True for names that tools probe for and W&B never has (no request needed)."""
    return component in _PROBE_NAMES or component.startswith(_PROBE_PREFIXES)


def split_path(path: str) -> tuple[str, ...]:
    """Split a mount path (``/e/p/r/a/b``) into its components."""
    return tuple(part for part in path.split("/") if part)


def _encodable(text: str) -> str:
    try:
        text.encode("utf-8", "surrogateescape")
        return text
    except UnicodeEncodeError:
        out = []
        for ch in text:
            try:
                ch.encode("utf-8", "surrogateescape")
                out.append(ch)
            except UnicodeEncodeError:
                out.append(f"%u{ord(ch):04X}")
        return "".join(out)


def _shorten(component: str) -> str:
    raw = component.encode("utf-8", "surrogateescape")
    if len(raw) <= NAME_MAX_BYTES:
        return component
    digest = hashlib.sha1(raw).hexdigest()[:8]
    keep = raw[: NAME_MAX_BYTES - 9]
    # Do not cut a multi-byte character in half.
    text = keep.decode("utf-8", "ignore")
    while len(text.encode("utf-8", "surrogateescape")) > NAME_MAX_BYTES - 9:
        text = text[:-1]
    return f"{text}~{digest}"


def safe_component(component: str) -> str:
    """Map one non-empty, non-``.`` component of a W&B name to a POSIX name."""
    if component.isascii() and component.isprintable() and len(component) <= NAME_MAX_BYTES and component != "..":
        return component  # the common case, unchanged by every rule below
    if component == "..":
        return "%2E%2E"
    component = component.replace("\x00", "%00")
    return _shorten(_encodable(component))


def name_components(wandb_name: str) -> tuple[str, ...]:
    """The displayed path components of a W&B name (rules 1-3)."""
    return tuple(safe_component(part) for part in wandb_name.split("/") if part not in ("", "."))


def append_suffix(component: str, suffix: str) -> str:
    """``component + suffix``, shortened by rule 3 when too long."""
    return _shorten(component + suffix)


def with_suffix(component: str, suffix: str) -> str:
    """Insert ``suffix`` before the extension (``a.txt`` -> ``a~2.txt``), within NAME_MAX."""
    stem, dot, ext = component.rpartition(".")
    if not dot or not stem:
        stem, ext, dot = component, "", ""
    return _shorten(f"{stem}{suffix}{dot}{ext}")


def display_links(runs: Iterable, run_ids: set[str] | frozenset[str] = frozenset()) -> dict[str, str]:
    """Symlink name -> run id for runs that have a display name (see the module rules)."""
    ordered = sorted(runs, key=lambda r: (r.created_at or 0.0, r.run_id))
    links: dict[str, str] = {}
    for run in ordered:
        display = run.display_name
        if not display or display == run.run_id:
            continue
        base = "%2E" if display == "." else safe_component(display.replace("/", "%2F"))
        if base in links or base in run_ids or is_probe_name(base):
            base = append_suffix(base, f"~{run.run_id}")
        links[base] = run.run_id
    return links
