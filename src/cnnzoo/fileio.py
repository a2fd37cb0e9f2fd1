"""Writing files so that a crash never leaves half of one, and reading the machine's name.

Every file cnnzoo writes (checkpoints, metrics, reports, caches, exports) goes through
`atomic_write`: the bytes go to a temp file in the same directory (a rename is only atomic
within one file system), which is flushed and fsynced, given the permissions a plain `open`
would have given it, renamed over the destination, and the directory is fsynced so the rename
itself survives a power cut. A reader sees the old file or the complete new one, never a mix.
"""

from __future__ import annotations

import contextlib
import os
import platform
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], object], *,
                 before_replace: Callable[[], object] | None = None) -> None:
    """Write `path` atomically; `write` is called with the open temp file (binary).

    Args:
        path: destination; its directory must exist.
        write: fills the file, e.g. `lambda f: torch.save(obj, f)`.
        before_replace: called between fsync and rename (fault injection in tests).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; outputs are for reading
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def remove_stale_temp_files(directory: str | os.PathLike) -> list[Path]:
    """Delete the temp files `atomic_write` left when its process was killed mid-write;
    returns what was removed."""
    stale = sorted(Path(directory).glob(".*.tmp"))
    for p in stale:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    return stale


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """`atomic_write` of UTF-8 text."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def fsync_dir(directory: str | os.PathLike) -> None:
    """Make a rename inside `directory` durable (a no-op where directories can't be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def cpu_name() -> str:
    """The CPU's name as /proc/cpuinfo gives it on Linux, else what `platform` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
