"""A run's files as a tree of folders, built once per listing.

A run's whole file list is fetched once and shared by every folder inside
it. ``RunTree`` is immutable after construction: a fresher listing builds a
new tree, so readers never see a half-built one. Names are mapped by the rules
in ``wfs.namespace.paths``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Union

from wfs.client.models import RunFile
from wfs.namespace.paths import FILE_FOLDER_SUFFIX, append_suffix, name_components, with_suffix


@dataclass
class FileEntry:
    file: RunFile


@dataclass
class DirEntry:
    children: dict[str, "Entry"] = field(default_factory=dict)
    mtime: float = 0.0


Entry = Union[FileEntry, DirEntry]


class RunTree:
    """The folders and files of one run, keyed by displayed names."""

    def __init__(self, files: Iterable[RunFile]):
        self.root = DirEntry()
        self.file_count = 0
        # Names already in canonical form ("a/b", not "/a//b") claim their path
        # first, so an exact-name look-up and the full listing always agree.
        mapped = [(name_components(f.name), f) for f in files]
        mapped.sort(key=lambda item: ("/".join(item[0]) != item[1].name, item[1].name))
        placed = [(components, run_file) for components, run_file in mapped if components]
        folders = {components[:i] for components, _ in placed for i in range(1, len(components))}
        for folder in sorted(folders):
            self._ensure_dir(folder)
        for components, run_file in placed:
            parent = self._ensure_dir(components[:-1])
            leaf = components[-1]
            if components in folders:
                leaf = append_suffix(leaf, FILE_FOLDER_SUFFIX)
            candidate, n = leaf, 1
            while candidate in parent.children:
                n += 1
                candidate = with_suffix(leaf, f"~{n}")
            parent.children[candidate] = FileEntry(run_file)
            self.file_count += 1
        self._stamp(self.root)

    def _ensure_dir(self, components: tuple[str, ...]) -> DirEntry:
        node = self.root
        for part in components:
            child = node.children.get(part)
            if not isinstance(child, DirEntry):
                child = node.children[part] = DirEntry()
            node = child
        return node

    def _stamp(self, node: DirEntry) -> float:
        newest = 0.0
        for child in node.children.values():
            if isinstance(child, DirEntry):
                newest = max(newest, self._stamp(child))
            else:
                newest = max(newest, child.file.updated_at or 0.0)
        node.mtime = newest
        return newest

    def lookup(self, components: tuple[str, ...]) -> Entry | None:
        node: Entry = self.root
        for part in components:
            if not isinstance(node, DirEntry):
                return None
            child = node.children.get(part)
            if child is None:
                return None
            node = child
        return node
