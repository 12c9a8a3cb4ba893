"""Keep XLA:CPU's temporary buffers in resident memory between calls: no page faults on every call.

Why: every call of a compiled function allocates its temporary buffers and frees them on return. JAX runs CPU
computations on a worker thread by default, and under glibc's malloc a buffer of more than a few tens of MB
that a worker thread allocates lives in a fresh memory mapping (a new heap of that thread's arena, or a plain
mmap) that is unmapped again when it is freed, so the next call touches brand-new pages. On the 2-core
development machines (`benchmarks/speed.py --malloc default`, column faults/call) one energy+forces call of the
buckyball catcher (148 atoms, XLA temp 76 MB) took about 19,400 minor page faults, water-192 about 41,000; the
same happened to training steps from batch 3 on (aspirin).

`tune_malloc()` makes two process-wide changes:
- JAX runs CPU computations in the calling thread (`jax_cpu_enable_async_dispatch=False`; XLA still spreads
  the work of one computation over the cores), so the buffers come from the main thread's heap;
- glibc serves large blocks from that heap instead of separate mappings (`M_MMAP_MAX=0`), never trims its top
  (`M_TRIM_THRESHOLD=-1`; a finite threshold, at most 2 GiB, still trimmed the buffers of the largest boxes),
  and grows it in 64 MB steps (`M_TOP_PAD`).
The heap reaches its steady size within a few calls, after which nothing faults (in rare processes XLA lets
one of its worker threads allocate a large buffer, which then lives in that thread's arena and still faults).

Measured side by side (`benchmarks/speed.py --malloc default|tuned`, README Performance): large systems 1.3-1.9
times faster (the slower the CPU's arithmetic, the smaller the share the faults took), small molecules unchanged
within the machines' noise. The price: the process keeps its peak heap
size instead of handing freed memory back; a Python call into compiled code returns only when it is done (no
overlap of Python work with computation; the toolkit waits for every result anyway); and computations started
from other Python threads (a widget's background MD) still allocate in their own arenas and keep faulting.
Limiting glibc to one arena instead fixed the faults too but made small molecules 30-90% slower (all threads on
one allocator lock); two arenas left the faults in some runs.

It must run before JAX runs anything: the dispatch setting is read when JAX creates its CPU client. Importing
this package never calls it. The library's entry points call `ensure_tuned()` (loading a `Potential`, `fit`,
`md.simulate`, `explore_minima`, a fresh model's `model.init_variables`), which applies it when JAX has not
started yet, so a user who starts with one of them gets it without knowing about it; a process that ran JAX
code before keeps JAX's defaults (call `tune_malloc()` yourself first in that case). Set SO3KRATES_TUNE_MALLOC=0 to make both do nothing. Other C libraries (musl, macOS) have no such settings;
there only the dispatch setting changes.
"""

from __future__ import annotations

import ctypes
import os
import platform
import warnings

# mallopt parameter numbers from glibc's malloc.h
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4

_MALLOPT = {  # name: (mallopt parameter, value)
    "mmap_max": (_M_MMAP_MAX, 0),
    "trim_threshold": (_M_TRIM_THRESHOLD, -1),  # -1: never trim (any finite value below 2 GiB trims the
    # temporary buffers of systems above ~5,000 atoms, whose single free block at the heap top is larger)
    "top_pad": (_M_TOP_PAD, 64 << 20),
}

_applied: dict | None = None


def tune_malloc() -> dict:
    """Apply the settings above once per process; returns what was applied ({} when SO3KRATES_TUNE_MALLOC=0).

    Warns if JAX's backends already exist (then the dispatch setting cannot take effect). Raises RuntimeError if
    glibc refuses a setting (mallopt returns 0), which would mean a changed glibc.
    """
    global _applied
    if _applied is not None:
        return dict(_applied)
    if os.environ.get("SO3KRATES_TUNE_MALLOC", "1").strip() == "0":
        _applied = {}
        return {}
    import jax
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        warnings.warn("tune_malloc() called after JAX started: computations keep running on JAX's worker "
                      "thread, whose buffers still fault; call it before JAX runs anything", stacklevel=2)
    jax.config.update("jax_cpu_enable_async_dispatch", False)
    applied = {"cpu_async_dispatch": False}
    if platform.libc_ver()[0] == "glibc":
        mallopt = ctypes.CDLL(None).mallopt
        mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
        for name, (param, value) in _MALLOPT.items():
            if mallopt(param, value) != 1:
                raise RuntimeError(f"glibc mallopt refused {name}={value}")
            applied[name] = value
    _applied = applied
    return dict(applied)


def ensure_tuned() -> bool:
    """Apply `tune_malloc()` quietly if it has not been applied and JAX has not started yet; returns whether
    the settings are in effect. The library's entry points call this; it never warns."""
    if _applied is not None:
        return bool(_applied)
    if os.environ.get("SO3KRATES_TUNE_MALLOC", "1").strip() == "0":
        return False
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        return False
    return bool(tune_malloc())


def malloc_tuned() -> bool:
    """Whether `tune_malloc` changed the settings in this process."""
    return bool(_applied)
