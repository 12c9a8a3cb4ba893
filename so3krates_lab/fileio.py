"""File helpers shared by the parts: one atomic file write for every module that saves results (a crash never
leaves a half-written file), and a check of an .npz file's first bytes for clear errors on other files."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


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


NPZ_MAGIC = b"PK\x03\x04"  # an .npz is a zip archive: every one starts with a local file header
NPY_MAGIC = b"\x93NUMPY"


def read_head(path, n: int = 64) -> bytes:
    """The first `n` bytes of a file."""
    with open(path, "rb") as fh:
        return fh.read(n)


def not_npz_reason(head: bytes) -> str | None:
    """None when `head` (a file's first bytes) may start an .npz archive; otherwise what the file looks like
    instead, as a clause for an error message, e.g. "it starts with '{', like a JSON file".

    Sniffing first keeps numpy's advice for other files ("load it unsafely using allow_pickle=") out of
    this package's errors: nothing here ever unpickles a file.
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
