"""Temporary store folders (``use_cache: false``) whose life is their data module's.

Each folder is ``{tempdir}/preflight-split-{pid}-{random}``: the data module removes its own in `teardown`, and
the next one to make a folder removes those whose process is gone (killed, or left through ``os._exit``
before any exit handler ran), so none outlives the run that made it for longer than the next run's start.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

PREFIX = "preflight-split-"
_OWNER = re.compile(rf"^{PREFIX}(\d+)-")


def new_scratch_folder() -> Path:
    """A fresh folder of this process, after removing the folders of processes that are gone."""
    remove_abandoned()
    return Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))


def remove_abandoned() -> list[Path]:
    """Remove the scratch folders whose owning process no longer runs; return them."""
    removed = []
    for folder in Path(tempfile.gettempdir()).glob(f"{PREFIX}*"):
        match = _OWNER.match(folder.name)
        if match and folder.is_dir() and not _running(int(match.group(1))):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
