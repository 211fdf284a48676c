"""Paths to W&B objects: ``Namespace`` resolves and lists, ``paths`` maps names."""

from wfs.namespace.tree import DirNode, FileNode, LinkNode, Listing, Namespace, Node

__all__ = ["DirNode", "FileNode", "LinkNode", "Listing", "Namespace", "Node"]
