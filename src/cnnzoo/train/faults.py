"""Fault injection for the crash tests: a process that SIGKILLs itself at a chosen point.

A SIGKILL cannot be caught, so it is the honest model of a power cut or an OOM kill. The
tests need it at a point they choose, not after a racy sleep, so the trainer calls
`kill_point(name)` at the places worth crashing in, and the environment variable
`CNNZOO_TEST_KILL_AT` names the one point at which the process kills itself:

- `train:E:S`       just before optimizer step S (1-based) of epoch E (1-based);
- `ckpt-write:E`    while writing last.pt at the end of epoch E, after the temp file is
                    complete and fsynced but before it is renamed over last.pt;
- `ckpt-write:E:S`  the same for the mid-epoch last.pt written after step S of epoch E.

Unset (always, outside the tests), `kill_point` is a dictionary lookup and a comparison.
"""

from __future__ import annotations

import os
import signal

ENV = "CNNZOO_TEST_KILL_AT"


def kill_point(name: str) -> None:
    """SIGKILL this process if `CNNZOO_TEST_KILL_AT` equals `name`."""
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
