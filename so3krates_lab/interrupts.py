"""Ctrl-C and SIGTERM that wait for a safe point: long loops stop between steps, never inside a compiled call.

    with deferred_interrupts() as interrupt:
        while ...:
            state = compiled_step(state)          # may donate (delete) its input buffers
            if interrupt.requested:
                break                             # state is a complete result here: save it

A first Ctrl-C (SIGINT) or SIGTERM only records the request; the loop stops at its next safe point. Interrupting
inside a compiled call instead (the default KeyboardInterrupt) can leave the names bound to donated buffers that
no longer exist, so nothing could be saved, and during compilation it can crash the process. A second Ctrl-C
raises KeyboardInterrupt at once (the previous handler is back in force). Signal handlers can only be set from
the main thread: elsewhere (a widget's background thread) the context does nothing and `requested` stays None.
"""

from __future__ import annotations

import signal
import threading


class DeferredInterrupts:
    """The context's value: `requested` is None or the name of the signal received ("SIGINT", "SIGTERM")."""

    def __init__(self, signals=(signal.SIGINT, signal.SIGTERM)):
        self.signals = tuple(signals)
        self.requested: str | None = None
        self._previous: dict = {}

    def _handler(self, signum, frame):
        self.requested = signal.Signals(signum).name
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, self._previous.get(signal.SIGINT, signal.default_int_handler))

    def __enter__(self) -> "DeferredInterrupts":
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()


def deferred_interrupts(signals=(signal.SIGINT, signal.SIGTERM)) -> DeferredInterrupts:
    return DeferredInterrupts(signals)


__all__ = ["DeferredInterrupts", "deferred_interrupts"]
