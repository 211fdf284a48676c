"""wfs: a read-only FUSE filesystem for Weights & Biases runs.

``with wfs.mount("~/wandb", "entity/project") as root:`` mounts for the
duration of a block (see ``wfs.api``).
"""

__version__ = "0.1.0"


def mount(*args, **kwargs):
    """Context manager: mount W&B, yield the mountpoint, unmount on exit (see ``wfs.api.mount``)."""
    from wfs.api import mount as _mount

    return _mount(*args, **kwargs)
