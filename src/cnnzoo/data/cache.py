"""Where cnnzoo keeps what it downloads or decodes once: the user cache directory.

A leaf module: `sources` searches it, `download` fills it and `folder` caches decoded image
folders in it, and none of them needs to import another for the path.
"""

from __future__ import annotations

import os
from pathlib import Path


def user_cache_dir() -> Path:
    """$XDG_CACHE_HOME/cnnzoo, else ~/.cache/cnnzoo (not created here)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cnnzoo"
