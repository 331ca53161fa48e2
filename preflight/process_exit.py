"""Ending a process that ran a distributed fit, with its status and without an abort.

`torch.distributed.destroy_process_group` ends gloo's threads (``pt_gloo_runloop``, ``gloo_tcp_loop``) and the
store's (``pt_tcpstore_uv``) only once nothing holds the process group any more. After an FSDP2 fit on torch
2.13 something still does, even with every Python reference to the model gone and collected (seen in
``/proc/self/task``; after DDP they end once the trainer is dropped). Those threads then run beside the
interpreter's and C++'s teardown, which now and then aborts a finished process on a busy machine (``terminate
called without an active exception``, exit -6). So such a process does its own end-of-process work, in order
(exit handlers: temporary stores, logging; then the standard streams), and ends with `os._exit`, which tears
down nothing that a running thread could still touch.

The `preflight` command does this by itself. A script of your own that trains with a distributed strategy
ends with `finish_distributed_process()`.
"""

from __future__ import annotations

import atexit
import os
import sys
from typing import NoReturn

_closed: list[bool] = []  # holds True once this process closed a process group


def close_process_group() -> None:
    """Close the default process group (and every other) if this process has one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
        _closed.append(True)


def closed_a_process_group() -> bool:
    """Whether this process closed a process group, so that it must leave through `leave_process`."""
    return bool(_closed)


def leave_process(status: int) -> NoReturn:
    """Run the exit handlers, flush the standard streams, and end the process with `status`."""
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed, or a closed pipe
            pass
    os._exit(status)


def finish_distributed_process(status: int = 0) -> None:
    """The end of a script that ran a distributed fit: close its process group and, if it had one, leave through
    `leave_process` (a process that never had one returns and exits as usual)."""
    close_process_group()
    if closed_a_process_group():
        leave_process(status)
