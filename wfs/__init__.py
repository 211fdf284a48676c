"""wfs: a read-only FUSE filesystem for Weights & Biases runs."""

__version__ = "0.1.0"
