"""File helpers shared by the parts: one atomic file write for every module that saves results (a crash never
leaves a half-written file), a writer lock so that two processes never write the same store or checkpoint at
once, and a check of an .npz file's first bytes for clear errors on other files.

Writer locks (`WriterLock`, `holds_writer_lock`): a writer takes `fcntl.flock(LOCK_EX | LOCK_NB)` on a lock file,
`<folder>/.writer.lock` for a folder (a trajectory or frame store, the CLI's output folder) or `<file>.lock` beside
a single file (a checkpoint), and writes its PID, host and command line into it. A second process that tries to
write gets `StoreBusyError` at once, naming the path and the holder. Readers take no lock: opening a store for
analysis while a run writes it stays allowed. The kernel drops the lock when the holder dies (kill -9 included),
so a crashed run never leaves a stale lock; a lock released normally also removes its file. Within one process
every lock on the same path shares one kernel lock with a reference count (two store objects on one folder, a
notebook that resumes a run, `fit` holding its checkpoint while `save_checkpoint` writes it), released when the
last holder releases it or is garbage-collected. A child made by `os.fork` holds none of its parent's locks (its
inherited copies are closed, so the parent's release still frees the path). Where `fcntl` does not exist
(Windows) the locks are a no-op; on a file system without flock support they warn once and do nothing.
"""

from __future__ import annotations

import errno
import functools
import inspect
import json
import os
import socket
import sys
import tempfile
import threading
import time
import warnings
import weakref
from pathlib import Path
from typing import Callable

try:
    import fcntl
except ImportError:  # Windows: writer locks are a no-op
    fcntl = None


def atomic_write(path, write: Callable[[str], None], mode: int = 0o644) -> Path:
    """Call write(tmp) on a temporary file beside `path`, fsync it, make it `mode`, rename it onto `path`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


class StoreBusyError(RuntimeError):
    """Another process holds the writer lock of `path` (a store folder or a checkpoint file).

    path: what was to be written; lock_path: the lock file; pid, host, command: the holder as it recorded
    itself in the lock file (None where unknown)."""

    def __init__(self, message: str, path=None, lock_path=None, pid: int | None = None, host: str | None = None,
                 command: str | None = None):
        super().__init__(message)
        self.path = None if path is None else Path(path)
        self.lock_path = None if lock_path is None else Path(lock_path)
        self.pid, self.host, self.command = pid, host, command

    def __reduce__(self):  # picklable with its fields (e.g. raised in a multiprocessing worker)
        return type(self), (str(self), self.path, self.lock_path, self.pid, self.host, self.command)


def _busy(path: Path, lock_path: Path, folder: bool, holder: dict) -> StoreBusyError:
    pid, host, command = holder.get("pid"), holder.get("host"), holder.get("command")
    if pid is None:
        who = "another process"
    else:
        who = f"process {pid}"
        if host and host != socket.gethostname():
            who += f" on host {host}"
        if command:
            who += f" ({command})"
    return StoreBusyError(f"{path} is being written by {who}; wait for it to finish, stop it, or use another "
                          f"{'folder' if folder else 'path'}", path, lock_path, pid, host, command)


class _Held:
    """One kernel lock of this process: the lock file's descriptor (None: no kernel lock) and how many
    `WriterLock` objects share it."""

    __slots__ = ("pid", "fd", "lock_path", "count")

    def __init__(self, fd: int | None, lock_path: Path):
        self.pid, self.fd, self.lock_path, self.count = os.getpid(), fd, lock_path, 1


_held: dict[str, _Held] = {}  # resolved lock path -> this process's lock on it
_mutex = threading.RLock()  # reentrant: a garbage-collected WriterLock may release inside a locked section
_unsupported_warned = False


def _after_fork_in_child() -> None:
    """The child holds none of the parent's locks: close its inherited descriptors (the lock stays the parent's
    until the parent closes its own) and forget them."""
    global _mutex
    _mutex = threading.RLock()
    for held in _held.values():
        if held.fd is not None:
            try:
                os.close(held.fd)
            except OSError:
                pass
            held.fd = None
    _held.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _lock_path(path: Path, folder: bool) -> Path:
    path = Path(path).resolve()
    return path / ".writer.lock" if folder else path.with_name(path.name + ".lock")


def _own_command() -> str:
    """This process's command line (from /proc where it exists), shortened for a one-line message."""
    try:
        with open("/proc/self/cmdline", "rb") as fh:
            argv = [a.decode(errors="replace") for a in fh.read().split(b"\0") if a]
    except OSError:
        argv = []
    if not argv:
        argv = [Path(sys.executable).name, *sys.argv]
    argv[0] = Path(argv[0]).name
    text = " ".join(" ".join(argv).split())
    return text if len(text) <= 160 else text[:157] + "..."


def _read_holder(lock_path: Path) -> dict:
    """What the holder wrote into its lock file ({} if nothing readable); retried briefly, as a holder writes
    it just after taking the lock."""
    for attempt in range(5):
        if attempt:
            time.sleep(0.02)
        try:
            info = json.loads(lock_path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(info, dict):
            return info
    return {}


def _take(path: Path, lock_path: Path, folder: bool) -> int | None:
    """Take the kernel lock on lock_path (or raise StoreBusyError); its descriptor, None without flock."""
    global _unsupported_warned
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        return None
    for _ in range(50):
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise _busy(path, lock_path, folder, _read_holder(lock_path)) from None
            if err.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                if not _unsupported_warned:
                    _unsupported_warned = True
                    warnings.warn(f"{lock_path}: the file system does not support flock ({err.strerror}); "
                                  "nothing stops two processes from writing the same store", stacklevel=4)
                return None
            raise
        # A releasing holder removes the file before unlocking: a lock on a removed (or replaced) file is no lock.
        try:
            current = os.stat(lock_path)
        except FileNotFoundError:
            current = None
        if current is not None and os.path.samestat(current, os.fstat(fd)):
            break
        os.close(fd)
    else:
        raise RuntimeError(f"{lock_path}: could not take the writer lock (the lock file keeps being replaced)")
    try:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": _own_command(),
                "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(info) + "\n").encode())
    except BaseException:
        os.close(fd)
        raise
    return fd


def _release(key: str, held: _Held) -> None:
    with _mutex:
        if held.pid != os.getpid():  # an object inherited across fork: the lock is the parent's
            return
        held.count -= 1
        if held.count > 0:
            return
        if _held.get(key) is held:
            del _held[key]
        if held.fd is None:
            return
        try:  # remove the file while still holding the lock (see _take), then unlock by closing
            if os.path.samestat(os.stat(held.lock_path), os.fstat(held.fd)):
                os.unlink(held.lock_path)
        except OSError:
            pass
        os.close(held.fd)
        held.fd = None


class WriterLock:
    """The writer lock of a store folder (`folder=True`: `<path>/.writer.lock`) or of a single file (`<path>.lock`
    beside it), taken at construction (creating the folder if missing): raises `StoreBusyError` naming the
    holder when another process holds it. Within one process any number of `WriterLock` objects on one path
    coexist.

    path: the store folder or the file; folder: whether `path` is a folder.
    Held until `release()` (idempotent), the end of a ``with`` block, or garbage collection."""

    def __init__(self, path, *, folder: bool = False):
        self.path, self.folder = Path(path), bool(folder)
        self.lock_path = _lock_path(self.path, self.folder)
        key = str(self.lock_path)
        with _mutex:
            held = _held.get(key)
            if held is not None and held.pid == os.getpid():
                held.count += 1
            else:
                held = _Held(_take(self.path, self.lock_path, self.folder), self.lock_path)
                _held[key] = held
        self._finalizer = weakref.finalize(self, _release, key, held)

    @property
    def held(self) -> bool:
        """Whether this object still holds its share of the lock (False after `release`)."""
        return self._finalizer.alive

    def release(self) -> None:
        """Give this object's share of the lock back (idempotent); the lock file goes with the last holder."""
        self._finalizer()

    def __enter__(self) -> "WriterLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"WriterLock({str(self.path)!r}, folder={self.folder}, held={self.held})"


def holds_writer_lock(argument: str, target: Callable[[Path], Path] = Path, *,
                      main_process_only: bool | str = False):
    """Decorator: while a call runs, hold the file `WriterLock` of `target(Path(value))`, where value is the
    call's `argument` (skipped when it is None); a second process calling on the same path gets StoreBusyError
    before the function does any work. main_process_only: in a multi-process job (`so3krates_lab.distributed`)
    only process 0 takes the lock, for functions whose other processes never write to the path; a string names
    the call's boolean argument that says so (e.g. "shard_walkers")."""

    def decorate(fn):
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def locked(*args, **kwargs):
            try:
                bound = signature.bind_partial(*args, **kwargs).arguments
            except TypeError:
                bound = {}  # the call itself raises the TypeError
            value = bound.get(argument)
            shared = bound.get(main_process_only, False) if isinstance(main_process_only, str) else main_process_only
            if value is None or (shared and not _is_main_process()):
                return fn(*args, **kwargs)
            with WriterLock(target(Path(value))):
                return fn(*args, **kwargs)

        return locked

    return decorate


def _is_main_process() -> bool:
    """False only on processes 1, 2, ... of a multi-process JAX job (JAX already imported by then: this module
    does not import it)."""
    jax = sys.modules.get("jax")
    return jax is None or jax.process_index() == 0


NPZ_MAGIC = b"PK\x03\x04"  #: an .npz is a zip archive: every one starts with a local file header
NPY_MAGIC = b"\x93NUMPY"  #: the first bytes of a single .npy array (np.save)


def read_head(path, n: int = 64) -> bytes:
    """The first `n` bytes of a file."""
    with open(path, "rb") as fh:
        return fh.read(n)


def not_npz_reason(head: bytes) -> str | None:
    """None when `head` (a file's first bytes) may start an .npz archive; otherwise what the file looks like
    instead, as a clause for an error message, e.g. "it starts with '{', like a JSON file".

    Sniffing first keeps numpy's advice for other files ("load it unsafely using allow_pickle=") out of
    this package's errors: nothing here ever unpickles a file.

    >>> not_npz_reason(NPZ_MAGIC + b"rest of a zip") is None
    True
    >>> not_npz_reason(b'{"energy": -97.1}')
    "it starts with '{', like a JSON file"
    >>> not_npz_reason(NPY_MAGIC + b"header")
    'it is a single .npy array, written by np.save rather than np.savez'
    >>> not_npz_reason(b"")
    'the file is empty (0 bytes)'
    """
    if head.startswith(NPZ_MAGIC) or head.startswith(b"PK\x05\x06"):  # a zip (the second: an empty one)
        return None
    if not head:
        return "the file is empty (0 bytes)"
    if head.startswith(NPY_MAGIC):
        return "it is a single .npy array, written by np.save rather than np.savez"
    if head.startswith(b"\x80"):
        return "it starts with byte 0x80, like a Python pickle; so3krates_lab never unpickles files"
    if head.startswith(b"\x1f\x8b"):
        return "it starts with bytes 1f 8b, like a gzip file"
    text = _as_text(head)
    if text is not None:
        stripped = text.lstrip("\ufeff \t\r\n")
        if stripped[:1] in ("{", "["):
            return f"it starts with {stripped[:1]!r}, like a JSON file"
        shown = stripped[:20] + ("..." if len(stripped) > 20 else "")
        return f"it starts with {shown!r}, like a text file"
    return f"it starts with {head[:8]!r}, not the zip signature {NPZ_MAGIC!r}"


def _as_text(head: bytes) -> str | None:
    """`head` decoded as UTF-8 text without control characters (a cut multi-byte character at the end is
    allowed), or None when it is binary."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start < len(head) - 3 or err.reason != "unexpected end of data":
            return None
        text = head[:err.start].decode("utf-8")
    if any(ord(c) < 32 and c not in "\t\r\n\f" for c in text):
        return None
    return text


__all__ = [
    "NPY_MAGIC", "NPZ_MAGIC", "StoreBusyError", "WriterLock", "atomic_write", "holds_writer_lock", "not_npz_reason",
    "read_head",
]
