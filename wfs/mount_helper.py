"""``mount.wfs``: lets ``mount -t wfs`` and ``/etc/fstab`` mount wfs.

mount(8) runs ``mount.wfs SOURCE MOUNTPOINT [-sfnv] [-o OPTIONS]``. SOURCE is
``ENTITY[/PROJECT[/RUN_ID]]`` (or ``wfs``/``wandb``/``none`` for the whole
account). Options with a ``wfs mount`` flag of the same name (``-`` written
``_``) become that flag (``cache_max_size=20G`` -> ``--cache-max-size 20G``);
mount(8)'s own options (``_netdev``, ``noauto``, ``nofail``, ``x-systemd.*``…)
are dropped; ``netrc=PATH`` points the key lookup at a netrc file; anything
else is passed to FUSE with ``-o``. Example fstab line::

    demo-user/mnist  /mnt/wandb  wfs  _netdev,cache_max_size=20G,netrc=/root/.netrc  0  0
"""

from __future__ import annotations

import os
import sys

_VALUE_OPTIONS = {
    "cache_dir", "cache_max_size", "dir_cache_time", "running_ttl", "base_url", "log_file", "log_level",
}
_FLAG_OPTIONS = {"allow_other", "hide_internal_files"}
_DROPPED = {"_netdev", "auto", "noauto", "user", "users", "nouser", "nofail", "defaults", "ro", "rw", "owner", "group"}
_WHOLE_ACCOUNT = {"", "wfs", "wandb", "none"}


def translate(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """mount.wfs arguments -> (``wfs`` arguments, extra environment)."""
    positional: list[str] = []
    options: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg == "-o":
            options.extend(next(args, "").split(","))
        elif arg.startswith("-o") and len(arg) > 2:
            options.extend(arg[2:].split(","))
        elif arg in ("-t", "-N"):
            next(args, None)
        elif arg.startswith("-"):
            continue  # -s -f -n -v: nothing to do for a FUSE mount
        else:
            positional.append(arg)
    if len(positional) != 2:
        raise SystemExit("usage: mount.wfs ENTITY[/PROJECT[/RUN_ID]] MOUNTPOINT [-o OPTIONS]")
    source, mountpoint = positional
    out = ["mount", mountpoint]
    if source.strip("/") not in _WHOLE_ACCOUNT:
        out.append(source.strip("/"))
    env: dict[str, str] = {}
    passthrough: list[str] = []
    for option in filter(None, options):
        key, eq, value = option.partition("=")
        if key in _DROPPED or key.startswith(("x-systemd.", "x-", "comment")):
            continue
        if key == "netrc" and eq:
            env["NETRC"] = value
        elif key in _VALUE_OPTIONS and eq:
            out += [f"--{key.replace('_', '-')}", value]
        elif key in _FLAG_OPTIONS:
            out.append(f"--{key.replace('_', '-')}")
        else:
            passthrough.append(option)
    for option in passthrough:
        out += ["-o", option]
    return out, env


def main(argv: list[str] | None = None) -> int:
    wfs_args, env = translate(list(sys.argv[1:] if argv is None else argv))
    os.environ.update(env)
    from wfs.cli import main as wfs_main

    return wfs_main(wfs_args)


if __name__ == "__main__":
    raise SystemExit(main())
