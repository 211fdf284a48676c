"""Read-ahead policy for one reader: which blocks to start fetching now.

Pure bookkeeping, no I/O and no threads; ``CachedFile`` calls
``on_read(offset, end)`` for every read (under its own lock) and starts
fetches for the blocks returned.

- A read is *sequential* if it starts within ``slack_bytes`` of where the
  previous one ended (multi-threaded FUSE delivers a stream slightly out of
  order). Anything else is a seek: the run and the window start over, and
  ``on_read`` reports it so queued read-ahead can be cancelled.
- Read-ahead starts once the current sequential run has at least two reads
  and covers ``min_run_bytes``, with a window of one block, and the window doubles each time the reader
  enters a new block, up to ``max_blocks``. A header read followed by random
  pokes therefore fetches nothing beyond what it touches.
- Each block is returned at most once per run.
"""

from __future__ import annotations

MIB = 1024 * 1024


class ReadAhead:
    def __init__(
        self,
        block_size_bytes: int,
        nblocks: int,
        max_blocks: int,
        *,
        min_run_bytes: int | None = None,
        slack_bytes: int = MIB,
    ) -> None:
        self.block_size_bytes = block_size_bytes
        self.nblocks = nblocks
        self.max_blocks = max(0, max_blocks)
        self.min_run_bytes = min(MIB, block_size_bytes) if min_run_bytes is None else min_run_bytes
        self.slack_bytes = slack_bytes
        self._last_end: int | None = None
        self._run_start = 0
        self._run_reads = 0
        self._window = 0
        self._block = -1  # block where the reader was last seen
        self._scheduled_until = 0  # blocks below this were already returned in this run

    @property
    def window_blocks(self) -> int:
        return self._window

    def on_read(self, offset: int, end: int) -> tuple[range, bool]:
        """Record a read of ``[offset, end)``; return (blocks to fetch ahead, whether it was a seek)."""
        last = self._last_end
        sequential = last is not None and last - self.slack_bytes <= offset <= last + self.slack_bytes
        seek = last is not None and not sequential
        if not sequential:
            self._run_start = offset
            self._run_reads = 0
            self._window = 0
            self._block = -1
            self._scheduled_until = 0
            self._last_end = end
        else:
            self._last_end = max(last, end)
        self._run_reads += 1
        if self.max_blocks == 0 or self._run_reads < 2 or self._last_end - self._run_start < self.min_run_bytes:
            return range(0), seek
        block = (end - 1) // self.block_size_bytes
        if block > self._block:
            self._window = min(self.max_blocks, max(1, self._window * 2) if self._block >= 0 else 1)
            self._block = block
        first = max(block + 1, self._scheduled_until)
        until = min(self.nblocks, block + 1 + min(self._window, self.max_blocks))
        if first >= until:
            return range(0), seek
        self._scheduled_until = until
        return range(first, until), seek
