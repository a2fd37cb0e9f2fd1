"""Download a weights file once into the user cache, verified by its SHA-256 prefix.

The careful parts, each for a failure seen in practice:

- the bytes stream into a part file of this process beside the target
  (`<cache>/.<file>.<random>.part`); a connection that drops mid-stream is retried
  (`RETRIES` times, with an HTTP `Range` request so that the transfer resumes where it stopped;
  a server that ignores the range sends the whole file again and the part file restarts);
- a transfer shorter than the server's Content-Length, an HTML page where a weights file was
  expected (a login or error page served with status 200) and a SHA-256 that does not start
  with the published prefix each delete the part file and raise one `WeightsDownloadError` line;
- only a complete, verified file is fsynced and renamed into place, so the cache holds either
  nothing or the right file, never a half of one;
- offline, the one line names the URL and the exact path where a file copied by hand is found.

The cache is `$CNNZOO_HOME/weights`, else `$XDG_CACHE_HOME/cnnzoo/weights`, else
`~/.cache/cnnzoo/weights` (the data sets' cache, `cnnzoo.data.cache`, has the same root).
`CNNZOO_WEIGHTS_URL` replaces the location of every file (file name appended), for a mirror or
a test server. Only the standard library (and `cnnzoo.fileio`) is used: this module sits at
the bottom of the models part, below the registry.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO

from cnnzoo.fileio import fsync_dir

CHUNK = 1 << 20
RETRIES = 3  # attempts after the first, each resuming the part file
HTML_MARKERS = (b"<!doctype html", b"<html")


class WeightsDownloadError(RuntimeError):
    """A weights transfer that failed, was cut short, was a web page or had the wrong hash.

    The message is one line; nothing is left in the cache."""


def weights_dir() -> Path:
    """Where downloaded weights live (not created here)."""
    home = os.environ.get("CNNZOO_HOME")
    if home:
        return Path(home) / "weights"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cnnzoo" / "weights"


def resolve_url(url: str) -> str:
    """`url`, or the file's name under `CNNZOO_WEIGHTS_URL` when that is set."""
    base = os.environ.get("CNNZOO_WEIGHTS_URL")
    return f"{base.rstrip('/')}/{url.rsplit('/', 1)[1]}" if base else url


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def cached_file(url: str, sha256_prefix: str | None, *, file_name: str | None = None,
                check: Callable[[Path], object] | None = None, progress: bool | None = None,
                timeout: float = 60.0) -> Path:
    """The path of the verified file for `url`, downloading it first if the cache lacks it.

    Args:
        url: the published location (`CNNZOO_WEIGHTS_URL` may replace it, see `resolve_url`).
        sha256_prefix: the first hex digits of the file's SHA-256, or None for a source that
            publishes none (the caller then checks the structure strictly).
        file_name: the name in the cache (default: the URL's last part).
        check: called with the complete, hash-checked part file before it is moved into
            place; what it raises (e.g. the strict structure check) leaves the cache clean.
        progress: draw a progress bar on stderr; None: only when stderr is a terminal.
        timeout: seconds without data before an attempt fails.

    Raises:
        WeightsDownloadError: see the module docstring; the cache is left as it was.
    """
    name = file_name or url.rsplit("/", 1)[1]
    target = weights_dir() / name
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    download(resolve_url(url), target, sha256_prefix, check=check, progress=progress,
             timeout=timeout)
    return target


def download(url: str, target: Path, sha256_prefix: str | None, *,
             check: Callable[[Path], object] | None = None, progress: bool | None = None,
             timeout: float = 60.0) -> None:
    """Fetch `url` into `target` atomically (see `cached_file`)."""
    # A part file of its own: ranks of one torchrun job may fetch the same file at once.
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    part = Path(name)
    show = sys.stderr.isatty() if progress is None else progress
    try:
        _transfer(url, target, part, show=show, timeout=timeout)
        _check(url, target, part, sha256_prefix)
        if check is not None:
            check(part)
        with open(part, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(part, 0o644)
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)
    fsync_dir(target.parent)


def _transfer(url: str, target: Path, part: Path, *, show: bool, timeout: float) -> None:
    """Stream `url` into `part`, resuming with a Range request after a dropped connection."""
    attempt = 0
    while True:
        done = part.stat().st_size
        request = urllib.request.Request(url, headers={"Range": f"bytes={done}-"} if done else {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:
                resumed = done > 0 and resp.status == 206
                total = _total_length(resp, done if resumed else 0)
                with open(part, "ab" if resumed else "wb") as out:
                    _copy(resp, out, done if resumed else 0, total, show, target.name)
            got = part.stat().st_size
            if total is not None and got < total:
                raise http.client.IncompleteRead(b"", total - got)
            if total is not None and got > total:
                raise WeightsDownloadError(f"{url}: got {got} bytes, more than the {total} "
                                           "announced; nothing was saved")
            return
        except urllib.error.HTTPError as err:
            raise WeightsDownloadError(f"{url}: HTTP {err.code} {err.reason}; nothing was saved") \
                from None
        except urllib.error.URLError as err:
            raise WeightsDownloadError(
                f"{url}: cannot connect ({err.reason}); offline? copy that file by hand to "
                f"{target}"
            ) from None
        except (http.client.IncompleteRead, ConnectionError, TimeoutError,
                http.client.HTTPException) as err:
            attempt += 1
            got = part.stat().st_size
            if attempt > RETRIES:
                raise WeightsDownloadError(
                    f"{url}: transfer cut short after {got} bytes, {RETRIES + 1} attempts "
                    f"({type(err).__name__}); nothing was saved"
                ) from None
            time.sleep(0.2 * attempt)


def _total_length(resp: http.client.HTTPResponse, offset: int) -> int | None:
    length = resp.headers.get("Content-Length")
    return offset + int(length) if length is not None else None


def _copy(resp: IO[bytes], out: IO[bytes], done: int, total: int | None, show: bool,
          label: str) -> None:
    last = 0.0
    while chunk := resp.read(CHUNK):
        out.write(chunk)
        done += len(chunk)
        now = time.monotonic()
        if show and (now - last > 0.1 or done == total):
            last = now
            _draw(label, done, total)
    if show:
        sys.stderr.write("\n")


def _draw(label: str, done: int, total: int | None) -> None:
    if total:
        filled = int(30 * done / total)
        bar = f"[{'#' * filled}{'.' * (30 - filled)}] {100 * done / total:5.1f}%"
    else:
        bar = "[?]"
    sys.stderr.write(f"\r{label} {bar} {done / 1e6:.1f} MB")
    sys.stderr.flush()


def _check(url: str, target: Path, part: Path, sha256_prefix: str | None) -> None:
    with open(part, "rb") as f:
        head = f.read(512).lstrip().lower()
    if head.startswith(HTML_MARKERS):
        raise WeightsDownloadError(f"{url}: the server sent a web page, not a weights file; "
                                   "nothing was saved")
    if sha256_prefix is not None:
        digest = sha256_file(part)
        if not digest.startswith(sha256_prefix):
            raise WeightsDownloadError(
                f"{url}: SHA-256 {digest[:len(sha256_prefix)]}... is not the published "
                f"{sha256_prefix}...; nothing was saved to {target}"
            )
