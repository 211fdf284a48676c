"""KernelExpiry: changeable paths are invalidated when their TTL ends, immutable ones never."""

from __future__ import annotations

import errno
import math
import threading
import time

from helpers import wait_for
from wfs.fuse_loop import gone
from wfs.kernel_expiry import KernelExpiry


class Kernel:
    def __init__(self, answer: int = 0) -> None:
        self.calls: list[tuple[str, float]] = []
        self.answer = answer
        self.lock = threading.Lock()

    def invalidate(self, path: str) -> int:
        with self.lock:
            self.calls.append((path, time.monotonic()))
        return self.answer

    def paths(self) -> list[str]:
        with self.lock:
            return [p for p, _ in self.calls]


def test_a_path_is_invalidated_once_its_ttl_ends_and_an_immutable_one_never():
    kernel = Kernel()
    expiry = KernelExpiry(kernel.invalidate, gone)
    expiry.start()
    try:
        touched = time.monotonic()
        expiry.touch("/e/p/live/output.log", 0.2)
        expiry.touch("/e/p/done/config.yaml", math.inf)
        wait_for(lambda: kernel.paths() == ["/e/p/live/output.log"], timeout=5, what="the invalidation")
        assert kernel.calls[0][1] - touched >= 0.19
        expiry.touch("/e/p/other", 0.05)  # a later, earlier-due path wakes the thread
        wait_for(lambda: len(kernel.paths()) == 2, timeout=5, what="the second invalidation")
        assert kernel.paths()[1] == "/e/p/other"
    finally:
        expiry.stop()
    assert "/e/p/done/config.yaml" not in kernel.paths()


def test_touching_again_postpones_the_invalidation():
    kernel = Kernel()
    expiry = KernelExpiry(kernel.invalidate, gone)
    expiry.start()
    try:
        expiry.touch("/x", 0.3)
        first = time.monotonic()
        time.sleep(0.2)  # the point of the test is the clock moving; bounded and short
        expiry.touch("/x", 0.3)
        wait_for(lambda: kernel.paths() == ["/x"], timeout=5, what="the invalidation")
        assert kernel.calls[0][1] - first >= 0.45
    finally:
        expiry.stop()


def test_nothing_is_invalidated_after_stop_or_once_the_mount_is_gone():
    kernel = Kernel(answer=-errno.ENODEV)
    expiry = KernelExpiry(kernel.invalidate, gone)
    expiry.start()
    expiry.touch("/a", 0.01)
    expiry.touch("/b", 0.01)
    wait_for(lambda: kernel.paths(), timeout=5, what="the first invalidation")
    expiry.touch("/c", 0.01)
    expiry.stop()
    assert kernel.paths() == ["/a"]  # ENODEV: the mount is gone, the rest is dropped

    stopped = Kernel()
    quiet = KernelExpiry(stopped.invalidate, gone)
    quiet.start()
    quiet.touch("/a", 0.05)
    quiet.stop()
    quiet.touch("/b", 0.01)
    assert stopped.paths() == []
