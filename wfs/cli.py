"""The ``wfs`` command: parses arguments, builds a ``WfsConfig``, wires the layers.

Owns logging setup. Every error a user can cause ends in one line on stderr
and a non-zero exit; no Python traceback reaches the user (unexpected ones
are logged in full to the log file, if any, and summarised on stderr).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import threading
from pathlib import Path

from wfs import __version__
from wfs.config import WfsConfig, default_cache_dir, parse_size

logger = logging.getLogger("wfs")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2


class UserError(Exception):
    """An error with a message meant for the user (printed as one line)."""


# --------------------------------------------------------------------- logging
class RedactFilter(logging.Filter):
    """Removes secrets from every log record, whatever module logged them."""

    def __init__(self, secrets: list[str]):
        super().__init__()
        self._secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = message
        for secret in self._secrets:
            redacted = redacted.replace(secret, "[REDACTED]")
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def setup_logging(level: str, log_file: str | None, *, to_stderr: bool) -> None:
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(getattr(logging, level.upper()))
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handlers: list[logging.Handler] = []
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
        os.chmod(log_file, 0o600)
    if to_stderr:
        handlers.append(logging.StreamHandler(sys.stderr))
    if not handlers:
        handlers.append(logging.NullHandler())
    for handler in handlers:
        handler.setFormatter(fmt)
        root.addHandler(handler)
    for noisy in ("urllib3", "mfusepy", "fuse"):
        logging.getLogger(noisy).setLevel(max(root.level, logging.WARNING))


def add_redaction(secret: str) -> None:
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactFilter([secret]))


# ------------------------------------------------------------------- arguments
def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _seconds(text: str) -> float:
    try:
        value = float(text.rstrip("s"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wfs", description="Mount Weights & Biases runs as a read-only filesystem.")
    parser.add_argument("--version", action="version", version=f"wfs {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    mount = sub.add_parser("mount", help="mount W&B at MOUNTPOINT")
    mount.add_argument("mountpoint", metavar="MOUNTPOINT", help="an existing empty directory")
    mount.add_argument("subpath", nargs="?", default="", metavar="SUBPATH", help="ENTITY[/PROJECT[/RUN_ID]] to mount just that")
    mount.add_argument("--base-url", help="W&B server (default: WANDB_BASE_URL, the wandb settings file, api.wandb.ai)")
    mount.add_argument("--cache-dir", type=Path, default=None, help="block cache (default: $XDG_CACHE_HOME/wfs)")
    mount.add_argument("--cache-max-size", type=_size, default=parse_size("10G"), metavar="SIZE", help="cache cap, e.g. 20G (default 10G)")
    mount.add_argument("--dir-cache-time", type=_seconds, default=60.0, metavar="SECONDS", help="how long entity, project and run lists are cached (default 60)")
    mount.add_argument("--running-ttl", type=_seconds, default=5.0, metavar="SECONDS", help="how long a running run's file list is cached (default 5)")
    mount.add_argument("--hide-internal-files", action="store_true", help="hide W&B's artifact/*/wandb_manifest.json entries")
    mount.add_argument("--allow-other", action="store_true", help="let other users see the mount (needs user_allow_other)")
    mount.add_argument("-o", dest="fuse_options", action="append", default=[], metavar="OPT", help="extra FUSE option (repeatable)")
    mount.add_argument("--daemon-wait", type=_seconds, default=60.0, metavar="SECONDS", help="how long to wait for the background mount to come up (default 60)")
    mount.add_argument("--read-only", action="store_true", help="accepted for rclone users: wfs is always read-only")
    mount.add_argument("-f", "--foreground", action="store_true", help="stay in the foreground and log to stderr")
    mount.add_argument("--log-file", help="write the daemon's log here")
    mount.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], type=str.upper)
    mount.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)
    mount.add_argument("--offline", action="store_true", help="no network: serve stored listings and cached bytes only")
    mount.add_argument("--timeout", type=_seconds, default=30.0, metavar="SECONDS", help="longest wait for W&B in one file operation, retries included (default 30)")
    mount.add_argument("--retries", type=int, default=5, metavar="N", help="retries of a failed request (default 5)")
    mount.add_argument("--max-requests-per-second", type=float, default=1.0, metavar="N", help="GraphQL request budget, bursts of 20 (default 1, W&B's guidance; 0: no limit)")
    mount.add_argument("--max-byte-requests-per-second", type=float, default=200.0, metavar="N", help="byte-range request budget, mostly to the storage host (default 200; 0: no limit)")
    mount.add_argument("--backoff", type=_seconds, default=1.0, help=argparse.SUPPRESS)
    mount.add_argument("--backoff-max", type=_seconds, default=10.0, help=argparse.SUPPRESS)
    mount.add_argument("--offline-cooldown", type=_seconds, default=5.0, help=argparse.SUPPRESS)

    unmount = sub.add_parser("unmount", aliases=["umount"], help="unmount a wfs mount")
    unmount.add_argument("mountpoint", metavar="MOUNTPOINT")
    unmount.add_argument("--lazy", action="store_true", help="detach now even if busy")

    status = sub.add_parser("status", help="show wfs mounts: cache use, hit rate, requests")
    status.add_argument("mountpoint", nargs="?", metavar="MOUNTPOINT", help="one mount (default: all)")
    status.add_argument("--json", action="store_true", help="print the raw status JSON")

    prefetch = sub.add_parser("prefetch", help="warm the cache with files or whole folders of a mount")
    prefetch.add_argument("paths", nargs="+", metavar="PATH", help="files or folders inside a wfs mount")
    prefetch.add_argument("-j", "--jobs", type=int, default=8, help="parallel files (default 8)")
    prefetch.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    cache = sub.add_parser("cache", help="inspect or trim the block cache")
    cache.add_argument("action", choices=["stats", "clear", "prune"])
    cache.add_argument("--cache-dir", type=Path, default=None)
    cache.add_argument("--max-size", type=_size, default=None, metavar="SIZE", help="with prune: shrink to this size")
    return parser


# -------------------------------------------------------------------- commands
def _resolve_credentials(base_url_option: str | None) -> tuple[str, str]:
    from wfs.credentials import CredentialsError, resolve_api_key, resolve_base_url

    try:
        base_url = resolve_base_url(base_url_option)
        return base_url, resolve_api_key(base_url)
    except (CredentialsError, ValueError) as exc:
        raise UserError(str(exc)) from None


def _config_from_args(args, base_url: str, api_key: str) -> WfsConfig:
    return WfsConfig(
        base_url=base_url,
        api_key=api_key,
        cache_dir=(args.cache_dir or default_cache_dir()).expanduser().resolve(),
        cache_max_bytes=args.cache_max_size,
        dir_cache_time_seconds=args.dir_cache_time,
        ttl_running_seconds=args.running_ttl,
        subpath=args.subpath.strip("/"),
        allow_other=args.allow_other,
        hide_internal_files=args.hide_internal_files,
        fuse_options=tuple(args.fuse_options),
        **_network_config(args),
    )


def _network_config(args) -> dict:
    """The ``WfsConfig`` fields of the retry, timeout, budget and offline flags."""
    timeout = args.timeout
    return {
        "offline": args.offline,
        "operation_timeout_seconds": timeout,
        "connect_timeout_seconds": min(10.0, timeout) if timeout else 10.0,
        "read_timeout_seconds": min(30.0, timeout) if timeout else 30.0,
        "max_retries": max(0, args.retries),
        "backoff_factor_seconds": args.backoff,
        "backoff_max_seconds": args.backoff_max,
        "max_requests_per_second": max(0.0, args.max_requests_per_second),
        "max_byte_requests_per_second": max(0.0, args.max_byte_requests_per_second),
        "offline_cooldown_seconds": args.offline_cooldown,
    }


def make_client(config: WfsConfig, **overrides):
    """The ``WandbClient`` a mount uses, from its config (``overrides`` for the start-up probe)."""
    from wfs.client import WandbClient

    settings = dict(
        page_size=config.page_size,
        connect_timeout_seconds=config.connect_timeout_seconds,
        read_timeout_seconds=config.read_timeout_seconds,
        max_retries=config.max_retries,
        backoff_factor_seconds=config.backoff_factor_seconds,
        backoff_max_seconds=config.backoff_max_seconds,
        operation_timeout_seconds=config.operation_timeout_seconds,
        max_requests_per_second=config.max_requests_per_second,
        request_burst=config.request_burst,
        max_byte_requests_per_second=config.max_byte_requests_per_second,
        offline_cooldown_seconds=config.offline_cooldown_seconds,
        offline=config.offline,
    )
    settings.update(overrides)
    return WandbClient(config.base_url, config.api_key, **settings)


def _check_account(client, config: WfsConfig):
    """Ask W&B who we are; a bad key or a dead host becomes a one-line error."""
    from wfs.client.errors import AuthError, NotFound, WandbError

    host = client.host
    try:
        viewer = client.viewer()
    except AuthError:
        raise UserError(f"the API key was rejected by {host} (check WANDB_API_KEY or ~/.netrc)") from None
    except WandbError as exc:
        raise UserError(f"cannot reach W&B at {host}: {exc}") from None
    if config.subpath:
        from wfs.namespace import Namespace

        try:
            Namespace(client, config, viewer).resolve("/")
        except NotFound:
            raise UserError(f"{config.subpath} was not found on {host}") from None
        except AuthError:
            raise UserError(f"no access to {config.subpath} on {host}") from None
        except WandbError as exc:
            raise UserError(f"cannot look up {config.subpath} on {host}: {exc}") from None
    return viewer


def tune_malloc() -> None:
    """Make glibc hand 8 MiB block buffers back to the OS at once.

    Without this, glibc's dynamic mmap threshold grows after the first large
    free and every reader thread's arena keeps block-sized buffers, so the
    daemon's RSS climbs to ~250 MB while streaming; with a fixed 1 MiB
    threshold it stays flat (see BENCHMARKS.md, case 6).
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 1 << 20)
        libc.mallopt(m_trim_threshold, 4 << 20)
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


def serve(config: WfsConfig, mountpoint: Path, *, viewer=None, on_ready=None) -> None:
    """Build client, namespace, cache and FUSE, and serve until unmounted (blocks)."""
    tune_malloc()
    from wfs.cache import BlockCache
    from wfs.cache.ledger import read_usage
    from wfs.fuse_ops import WfsFUSE, WfsOperations
    from wfs.mounting import tune_readahead
    from wfs.namespace import Namespace
    from wfs.namespace.store import ListingStore
    from wfs.prefetch import FolderReadAhead

    client = make_client(config)
    store = ListingStore(config.cache_dir / "metadata.sqlite3")
    namespace = Namespace(client, config, viewer, store)
    cache = BlockCache(config.cache_dir, config.cache_max_bytes, config.block_size_bytes)

    served = threading.Event()

    def ready():
        served.set()
        threading.Thread(target=tune_readahead, args=(mountpoint,), daemon=True).start()
        if on_ready is not None:
            on_ready()

    readahead = FolderReadAhead(namespace, cache, max_file_bytes=config.block_size_bytes)

    def status() -> dict:
        cache_stats, client_stats = cache.stats(), client.stats()
        return {
            "mountpoint": str(mountpoint),
            "base_url": config.base_url,
            "subpath": config.subpath,
            "pid": os.getpid(),
            "offline": config.offline or client.unreachable,
            "cache": {
                "dir": str(config.cache_dir),
                "used_bytes": cache_stats.used_bytes,  # this mount's blocks
                "dir_used_bytes": read_usage(config.cache_dir),  # every mount's: what the cap bounds
                "max_bytes": cache_stats.max_bytes,
                "objects": cache_stats.objects,
                "hits": cache_stats.hits,
                "misses": cache_stats.misses,
                "hit_rate": cache_stats.hit_rate,
                "bytes_fetched": cache_stats.bytes_fetched,
            },
            "requests": dataclasses.asdict(client_stats),
            "kernel_requests": dict(ops.kernel_requests),
            "kernel_invalidations": ops.expiry.invalidated if ops.expiry else 0,
        }

    ops = WfsOperations(namespace, cache, on_ready=ready, folder_readahead=readahead, status=status)
    ops.timeouts = {
        "entry": config.ttl_running_seconds,
        "attr": config.ttl_running_seconds,
        "negative": config.negative_ttl_seconds,
    }
    options = {"ro": True, "default_permissions": True, "fsname": "wfs", "subtype": "wfs"}
    if config.allow_other:
        options["allow_other"] = True
    for extra in config.fuse_options:
        for item in extra.split(","):
            key, eq, value = item.partition("=")
            if key:
                options[key.strip()] = value if eq else True
    try:
        WfsFUSE(ops, str(mountpoint), foreground=True, raw_fi=True, **options)
    except RuntimeError as exc:
        # libfuse's loop reports a SIGTERM/SIGINT/SIGHUP stop as an error code; once the
        # mount was up and is gone again, that is a clean, requested unmount.
        if not served.is_set() or os.path.ismount(mountpoint):
            raise
        logger.info("stopped by a signal (libfuse code %s); unmounted", exc)
    finally:
        cache.close()
        store.close()
        client.close()


def cmd_mount(args) -> int:
    from wfs.mounting import MountError, ReadyPipe, check_fuse, check_mountpoint, secure_cache_dir, spawn_daemon

    ready_pipe = ReadyPipe(args.ready_fd)
    mountpoint = Path(args.mountpoint).expanduser().absolute()
    daemon_child = args.ready_fd is not None
    setup_logging(args.log_level, args.log_file, to_stderr=args.foreground and not daemon_child)
    try:
        check_fuse()
        check_mountpoint(mountpoint)
        base_url, api_key = _resolve_credentials(args.base_url)
        add_redaction(api_key)
        config = _config_from_args(args, base_url, api_key)
        os.umask(0o077)  # whatever the daemon creates (cache, store, logs) is private
        secure_cache_dir(config.cache_dir)
        probe_settings = {"max_retries": min(1, config.max_retries), "max_requests_per_second": 0.0,
                          "operation_timeout_seconds": min(15.0, config.operation_timeout_seconds or 15.0)}
        if not args.foreground:
            # Validate in the parent so a bad key fails fast, then hand over.
            if not config.offline:
                probe = make_client(config, **probe_settings)
                try:
                    _check_account(probe, config)
                finally:
                    probe.close()
            spawn_daemon(args.argv, mountpoint, timeout_seconds=args.daemon_wait)
            print(f"wfs: mounted {base_url} at {mountpoint}", file=sys.stderr)
            return EXIT_OK
        viewer = None
        if not config.offline:
            probe = make_client(config, **probe_settings)
            try:
                viewer = _check_account(probe, config)
            finally:
                probe.close()
        logger.info("mounting %s%s at %s", base_url, f"/{config.subpath}" if config.subpath else "", mountpoint)
        serve(config, mountpoint, viewer=viewer, on_ready=lambda: ready_pipe.send("ok"))
        return EXIT_OK
    except (UserError, MountError) as exc:
        ready_pipe.send(f"error: {exc}")
        print(f"wfs: {exc}", file=sys.stderr)
        logger.error("%s", exc)
        return EXIT_ERROR
    finally:
        ready_pipe.send("error: the daemon stopped before the mount was ready")


def cmd_unmount(args) -> int:
    from wfs.mounting import MountError, unmount

    try:
        unmount(Path(args.mountpoint).expanduser().absolute(), lazy=args.lazy)
    except MountError as exc:
        print(f"wfs: {exc}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def cmd_status(args) -> int:
    import json

    from wfs.mounts import read_status, wfs_mounts

    mountpoints = [Path(args.mountpoint).expanduser().absolute()] if args.mountpoint else wfs_mounts()
    if not mountpoints:
        print("no wfs mounts", file=sys.stderr)
        return EXIT_OK
    statuses = []
    for mountpoint in mountpoints:
        try:
            statuses.append(read_status(mountpoint))
        except (OSError, ValueError) as exc:
            raise UserError(f"{mountpoint} is not a working wfs mount ({exc})") from None
    if args.json:
        print(json.dumps(statuses if not args.mountpoint else statuses[0], indent=2))
        return EXIT_OK
    for st in statuses:
        cache, req = st["cache"], st["requests"]
        print(f"{st['mountpoint']}  ({st['base_url']}{'/' + st['subpath'] if st['subpath'] else ''}, pid {st['pid']})")
        shared = cache.get("dir_used_bytes")
        shared_text = f" (whole dir {shared / 2**20:,.1f} MiB)" if shared is not None else ""
        print(f"  cache     {cache['used_bytes'] / 2**20:,.1f} MiB{shared_text} of {cache['max_bytes'] / 2**20:,.0f} MiB, "
              f"{cache['objects']} objects, hit rate {cache['hit_rate']:.0%}  ({cache['dir']})")
        print(f"  requests  {req['graphql_requests']} GraphQL, {req['byte_requests']} byte ranges "
              f"({req['bytes_received'] / 2**20:,.1f} MiB), {req['retries']} retries, "
              f"{req['in_flight']} in flight")
        print(f"  offline   {'yes' if st['offline'] else 'no'}")
    return EXIT_OK


def cmd_prefetch(args) -> int:
    from wfs.mounts import mount_of
    from wfs.warm import warm

    paths = [Path(p).expanduser().absolute() for p in args.paths]
    for path in paths:
        if mount_of(path) is None:
            raise UserError(f"{path} is not inside a wfs mount")
        if not path.exists():
            raise UserError(f"{path} does not exist")
    result = warm(paths, jobs=args.jobs, show_progress=None if not args.quiet else False)
    print(f"wfs: prefetched {result.files} files, {result.bytes / 2**20:,.1f} MiB", file=sys.stderr)
    if result.failed:
        print(f"wfs: {len(result.failed)} files failed:", file=sys.stderr)
        for path, reason in result.failed:
            print(f"  {path}: {reason}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def cmd_cache(args) -> int:
    from wfs.cache import cache_stats, clear_cache, prune_cache

    root = (args.cache_dir or default_cache_dir()).expanduser()
    if args.action == "stats":
        stats = cache_stats(root)
        print(f"cache dir:  {root}")
        print(f"size:       {stats.used_bytes / 2**20:.1f} MiB")
        print(f"objects:    {stats.objects}")
        print(f"blocks:     {stats.blocks}")
    elif args.action == "clear":
        clear_cache(root)
        print(f"wfs: cleared {root}", file=sys.stderr)
    else:
        if args.max_size is None:
            raise UserError("cache prune needs --max-size SIZE")
        prune_cache(root, args.max_size)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    handlers = {
        "mount": cmd_mount,
        "unmount": cmd_unmount,
        "umount": cmd_unmount,
        "status": cmd_status,
        "prefetch": cmd_prefetch,
        "cache": cmd_cache,
    }
    try:
        return handlers[args.command](args)
    except UserError as exc:
        print(f"wfs: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug: one line for the user, the traceback in the log
        logger.exception("unexpected error")
        print(f"wfs: unexpected error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
