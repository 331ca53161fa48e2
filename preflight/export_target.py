"""Where an export may write, and replacing an earlier export atomically.

An export writes only into a folder that does not exist, is empty, or holds an earlier export of preflight's
(it carries `EXPORT_MARK`). Everything else is refused before anything is written: a folder of the user's own files,
the current folder or one holding it, and a folder holding the source checkpoint. The new folder is written
complete beside the target first; replacing an earlier export is then one atomic exchange of the two folders
(``renameat2(RENAME_EXCHANGE)`` on Linux), so a kill at any moment leaves either the old export or the new one at
the target, and the other one in a hidden folder beside it that the next export removes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .checkpointing import current_umask
from .errors import PreflightConfigError

#: the file that marks a folder as an export preflight wrote (what it was exported from, and at which step)
EXPORT_MARK = "preflight_export.json"
STAGING_INFIX = ".preflight-export-"


class ExportTargetError(PreflightConfigError):
    """An export target preflight may not write into; nothing was written."""


def is_our_export(folder: Path) -> bool:
    return (folder / EXPORT_MARK).is_file()


def check_export_target(out: str | Path, protected: tuple[str | Path, ...] = ()) -> Path:
    """`out` if an export may write there, else `ExportTargetError` naming why. `protected`: paths the export must
    not replace or sit above (the source checkpoint, a run's folder)."""
    out = Path(out)
    target = out.absolute()
    resolved = Path(os.path.realpath(target))
    if out.is_symlink():
        raise ExportTargetError(f"{out}: is a link; export into a new folder (nothing written)")
    cwd = Path(os.path.realpath(os.getcwd()))
    if resolved == cwd or resolved in cwd.parents:
        raise ExportTargetError(f"{out}: is the current folder or holds it; export into a new folder (nothing written)")
    for path in protected:
        inside = Path(os.path.realpath(Path(path).absolute()))
        if resolved == inside or resolved in inside.parents:
            raise ExportTargetError(
                f"{out}: holds {path}, which the export reads or belongs to the run; export into a new folder "
                "(nothing written)"
            )
    if out.exists() and not out.is_dir():
        raise ExportTargetError(f"{out}: is a file, not a folder (nothing written)")
    if out.is_dir() and any(out.iterdir()) and not is_our_export(out):
        raise ExportTargetError(
            f"{out}: holds files preflight did not write (no {EXPORT_MARK}); export into a new or empty folder "
            "(nothing written)"
        )
    return out


@contextmanager
def staged_export(out: Path, mark: dict[str, Any]) -> Iterator[Path]:
    """A hidden folder beside `out` to write the export into (marked first, so a kill leaves a folder that is
    recognisably ours); on success it takes `out`'s place atomically, on failure it is removed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(out)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}{STAGING_INFIX}"))
    try:
        (staging / EXPORT_MARK).write_text(json.dumps(mark, indent=2) + "\n")
        yield staging
        _usual_modes(staging)
        check_export_target(out)  # again at the swap: the target may have changed while the export was written
        if out.exists():
            _exchange(staging, out)  # staging now holds the earlier export (or the empty folder)
            shutil.rmtree(staging)
        else:
            staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _remove_stale_staging(out: Path) -> None:
    """Staging folders of exports to `out` that a kill interrupted: marked as ours, so they may go."""
    for stale in out.parent.glob(f".{out.name}{STAGING_INFIX}*"):
        if stale.is_dir() and not stale.is_symlink() and is_our_export(stale):
            shutil.rmtree(stale, ignore_errors=True)


def _usual_modes(folder: Path) -> None:
    """mkdtemp (and some writers) make files private; give them the modes a plain write would."""
    mask = current_umask()
    folder.chmod(0o777 & ~mask)
    for file in folder.rglob("*"):
        file.chmod((0o777 if file.is_dir() else 0o666) & ~mask)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> None:
    """Swap two folders in one step (Linux ``renameat2``); elsewhere two renames, with `b` away only between them."""
    libc_name = ctypes.util.find_library("c")
    renameat2 = getattr(ctypes.CDLL(libc_name, use_errno=True), "renameat2", None) if libc_name else None
    if renameat2 is not None:
        if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
            return
        errno = ctypes.get_errno()
        if errno not in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: the file system cannot exchange; fall back
            raise OSError(errno, os.strerror(errno), str(b))
    aside = Path(tempfile.mkdtemp(dir=b.parent, prefix=f".{b.name}{STAGING_INFIX}old-"))
    aside.rmdir()
    b.rename(aside)
    a.rename(b)
    aside.rename(a)
