"""glibc heap settings for long ingestions: peak memory that does not grow with the video's duration."""

from __future__ import annotations


def steady_heap(threshold: int = 1 << 20, arenas: int = 0) -> None:
    """Serve allocations of `threshold` bytes and more (1 MB: audio chunks, feature maps) with mmap,
    always; with `arenas`, see `share_heaps`.

    glibc's default raises this threshold after each large free, so later large buffers come from
    the heap, which fragments and grows with every chunk: measured +18% peak RSS for 3x the duration
    without this, +12% with it (docs/benchmarks/ingest.md). A no-op off glibc."""
    m_mmap_threshold = -3
    _mallopt(m_mmap_threshold, threshold)
    share_heaps(arenas)


def share_heaps(arenas: int) -> None:
    """Let this process's threads share at most `arenas` heaps (0: glibc's default, 8 per core).

    By default each thread that allocates gets a heap of its own, which keeps what it freed for
    itself: the visual worker's analysing threads each held their own frames' worth
    (docs/benchmarks/README.md, "The vision stage"). Call it before the threads start. A no-op off
    glibc."""
    m_arena_max = -8
    if arenas > 0:
        _mallopt(m_arena_max, arenas)


def _mallopt(param: int, value: int) -> None:
    import contextlib
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(param, value)


def release_heap() -> None:
    """Hand memory freed by a finished stage back to the OS (glibc keeps it otherwise), so the next
    stage's peak does not stack on the last one's leftovers. A no-op off glibc."""
    import contextlib
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
