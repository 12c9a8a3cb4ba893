"""Ctrl-C and SIGTERM that wait for a safe point: long loops stop between steps, never inside a compiled call::

    with deferred_interrupts() as interrupt:
        while ...:
            state = compiled_step(state)          # may donate (delete) its input buffers
            if interrupt.requested:
                break                             # state is a complete result here: save it

A first Ctrl-C (SIGINT) or SIGTERM only records the request; the loop stops at its next safe point. Interrupting
inside a compiled call instead (the default KeyboardInterrupt) can leave the names bound to donated buffers that
no longer exist, so nothing could be saved, and during compilation it can crash the process. A second Ctrl-C
raises KeyboardInterrupt at once (a second SIGTERM raises SystemExit(143)).

Contexts nest: training, MD, minima exploration and reference labelling each open one around their loop, and a
workflow may open one around all of it (a script that loads a model, compiles and then runs MD). A signal marks
every open context, so the innermost loop stops at its safe point and each enclosing one sees the request too.
Signal handlers can only be set from the main thread: elsewhere (a widget's background thread) the context does
nothing and `requested` stays None.

`Interrupted` is what a function raises when it stopped on a request and has no partial result to return (the
labelling of reference data): everything up to its last chunk is saved, and the same call resumes.
"""

from __future__ import annotations

import signal
import threading

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_open: list["DeferredInterrupts"] = []  # the open contexts of the main thread, outermost first
_saved_handlers: dict = {}  # the handlers in force before the first context opened


class Interrupted(KeyboardInterrupt):
    """Stopped on Ctrl-C or SIGTERM after saving; `signal_name` is "SIGINT" or "SIGTERM". Rerun to resume."""

    def __init__(self, message: str, signal_name: str = "SIGINT"):
        super().__init__(message)
        self.signal_name = signal_name


def _handler(signum, frame):
    name = signal.Signals(signum).name
    if any(name in c.received for c in _open):  # the second of the same signal: stop at once
        if signum == signal.SIGTERM:
            raise SystemExit(128 + signum)
        raise KeyboardInterrupt
    for context in _open:
        context.received.add(name)
        context.requested = context.requested or name


class DeferredInterrupts:
    """The context's value: `requested` is None or the name of the signal received ("SIGINT", "SIGTERM")."""

    def __init__(self):
        self.requested: str | None = None
        self.received: set[str] = set()  # the signals received while it was open
        self._active = False

    def __enter__(self) -> "DeferredInterrupts":
        if threading.current_thread() is threading.main_thread():
            if not _open:
                for sig in _SIGNALS:
                    _saved_handlers[sig] = signal.signal(sig, _handler)
            # a request that reached an enclosing context before this one opened applies here too
            self.requested = next((c.requested for c in _open if c.requested), None)
            self.received = set().union(*(c.received for c in _open))
            _open.append(self)
            self._active = True
        return self

    def __exit__(self, *exc) -> None:
        if not self._active:
            return
        self._active = False
        if self in _open:
            _open.remove(self)
        if not _open:
            for sig, previous in _saved_handlers.items():
                signal.signal(sig, previous)
            _saved_handlers.clear()

    def raise_if_requested(self, message: str) -> None:
        """Raise `Interrupted(message)` if a signal was received (call it at a safe point, after saving)."""
        if self.requested:
            raise Interrupted(f"{message} ({self.requested})", self.requested)


def deferred_interrupts() -> DeferredInterrupts:
    """A new `DeferredInterrupts` context (see the module docstring): ``with deferred_interrupts() as interrupt:``
    records SIGINT / SIGTERM in ``interrupt.requested`` until the block ends."""
    return DeferredInterrupts()


def guarded(function):
    """Run every call of `function` inside `deferred_interrupts()`: a signal during its set-up (before its loop
    opens its own context, which inherits the request) is kept instead of raising KeyboardInterrupt there."""
    import functools

    @functools.wraps(function)
    def call(*args, **kwargs):
        with deferred_interrupts():
            return function(*args, **kwargs)

    return call


__all__ = ["DeferredInterrupts", "Interrupted", "deferred_interrupts", "guarded"]
