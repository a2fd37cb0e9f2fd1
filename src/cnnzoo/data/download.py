"""Download the official files of a named data set, verified by their published MD5.

Each file streams into a temp file in the destination folder while its MD5 is computed; only
a complete transfer (as long as the server's Content-Length) with the published checksum is
fsync'ed and renamed into place. Anything else deletes the temp file and raises, so a failed
download never leaves a file that a later load could mistake for the data set.

Mirrors: `base_url` replaces the official location for one data set (files at
base_url + file name); the environment variable CNNZOO_MIRROR points at a mirror of all of
them, laid out as <CNNZOO_MIRROR>/<data set>/<file name>.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from cnnzoo.data.cache import user_cache_dir
from cnnzoo.data.sources import DATASETS

CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A transfer that failed, was truncated or did not match its checksum."""


def md5_file(path: str | Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def fetch(url: str, target: str | Path, md5: str, *, timeout: float = 60.0) -> Path:
    """Download `url` to `target` atomically, verifying its MD5.

    Raises:
        DownloadError: HTTP or network failure, a transfer shorter than Content-Length, or a
            checksum mismatch; in every case nothing is left at `target` or beside it.
    """
    target = Path(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    h = hashlib.md5(usedforsecurity=False)
    done = 0
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as resp:
                    length = resp.headers.get("Content-Length")
                    expected = int(length) if length is not None else None
                    while chunk := resp.read(CHUNK):
                        out.write(chunk)
                        h.update(chunk)
                        done += len(chunk)
            except http.client.IncompleteRead as err:
                done += len(err.partial)
                raise DownloadError(
                    f"{url}: truncated transfer, the connection closed after {done} of "
                    f"{expected} bytes; nothing was saved"
                ) from None
            except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
                raise DownloadError(f"{url}: download failed ({err}); nothing was saved") \
                    from None
            if expected is not None and done != expected:
                raise DownloadError(
                    f"{url}: truncated transfer, got {done} of {expected} bytes; "
                    f"nothing was saved"
                )
            if h.hexdigest() != md5:
                raise DownloadError(
                    f"{url}: checksum mismatch, MD5 {h.hexdigest()} but the published MD5 is "
                    f"{md5}; the file was deleted"
                )
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return target


def download(name: str, root: str | Path | None = None, *, base_url: str | None = None,
             timeout: float = 60.0,
             report: Callable[[str], None] | None = None) -> Path:
    """Fetch the official files of `name` into `<root>/<name>/` (root: the user cache).

    Files already there with the right MD5 are kept. Returns the folder.

    Args:
        name: "fashion-mnist", "mnist", "cifar10" or "cifar100".
        root: destination root; `load_dataset(name, data_dir=root)` finds the files there.
        base_url: where the files are (default: CNNZOO_MIRROR/<name>/, else the official URL).
        timeout: seconds without data before a transfer fails.
        report: called with one line per file (for the CLI).
    """
    if name not in DATASETS:
        raise ValueError(f"cannot download {name!r}: expected one of {', '.join(DATASETS)}")
    info = DATASETS[name]
    if base_url is None:
        mirror = os.environ.get("CNNZOO_MIRROR")
        base_url = f"{mirror.rstrip('/')}/{name}/" if mirror else info.base_url
    dest = Path(root if root is not None else user_cache_dir()) / name
    dest.mkdir(parents=True, exist_ok=True)
    for file, md5 in info.files.items():
        target = dest / file
        if target.is_file() and md5_file(target) == md5:
            if report:
                report(f"{target}: present, MD5 ok")
            continue
        fetch(base_url + file, target, md5, timeout=timeout)
        if report:
            report(f"{target}: downloaded, {target.stat().st_size:,} bytes, MD5 ok")
    return dest
