"""Keep XLA:CPU's temporary buffers in resident memory between calls (glibc malloc settings), for large systems.

Why: every call of a compiled function allocates its temporary buffers and frees them on return. Under glibc's
default malloc, a buffer of more than a few tens of MB that a worker thread allocates lives in a fresh memory
mapping (a new heap of the thread's arena, or a plain mmap above the mmap threshold) that is unmapped again when
it is freed, so the next call touches brand-new pages. On the 2-core development machines one energy+forces call
of the buckyball catcher (148 atoms, XLA temp 76 MB) took about 19,400 minor page faults, water-192 about 41,000
and water-1536 about 330,000; `benchmarks/speed.py --malloc default|tuned` measures the times with and without.

`tune_malloc()` changes four process-wide glibc settings so that freed memory stays mapped and is reused: one
arena for all threads (the main heap, which grows with brk and honours the trim threshold), no mmap for large
blocks, no trimming of the heap's top, and a 64 MB growth step. The heap needs a few calls (water-1536: 3) to reach its
steady size; after that those systems run without page faults.

The price: the process keeps its peak heap size instead of handing freed memory back, and all threads share one
allocator lock. Small molecules never reach the thresholds and only pay for the shared lock: in side-by-side
runs of `benchmarks/speed.py` ethanol took 1.85-1.90 ms tuned against 1.23-1.44 ms, aspirin 3.5-5.2 against
2.6-2.7 ms. So use it for periodic boxes and molecules of a hundred atoms or more, not by default. (Two arenas
instead of one kept the small molecules' speed but left the large systems' faults in some runs and not in
others, depending on which thread got which arena.) Importing this package never calls it; the speed benchmark
does with --malloc tuned, and the speed-and-scaling notebook does.

Call it first, before JAX runs anything: threads that have already allocated keep their own arenas, and then only
part of the gain remains. Set SO3KRATES_TUNE_MALLOC=0 to make the call do nothing. Other C libraries (musl,
macOS) have no such settings; there the call does nothing and returns an empty dict.
"""

from __future__ import annotations

import ctypes
import os
import platform

# mallopt parameter numbers from glibc's malloc.h
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -2, -4, -8

_SETTINGS = {  # name: (mallopt parameter, value)
    "arena_max": (_M_ARENA_MAX, 1),
    "mmap_max": (_M_MMAP_MAX, 0),
    "trim_threshold": (_M_TRIM_THRESHOLD, 2**31 - 1),
    "top_pad": (_M_TOP_PAD, 64 << 20),
}

_applied: dict[str, int] | None = None


def tune_malloc() -> dict[str, int]:
    """Apply the settings above once per process; returns those applied ({} where glibc or consent is missing).

    Raises RuntimeError if glibc refuses a setting (mallopt returns 0), which would mean a changed glibc.
    """
    global _applied
    if _applied is not None:
        return dict(_applied)
    if os.environ.get("SO3KRATES_TUNE_MALLOC", "1").strip() == "0" or platform.libc_ver()[0] != "glibc":
        _applied = {}
        return {}
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    for name, (param, value) in _SETTINGS.items():
        if mallopt(param, value) != 1:
            raise RuntimeError(f"glibc mallopt refused {name}={value}")
    _applied = {name: value for name, (_, value) in _SETTINGS.items()}
    return dict(_applied)


def malloc_tuned() -> bool:
    """Whether `tune_malloc` changed the settings in this process."""
    return bool(_applied)
