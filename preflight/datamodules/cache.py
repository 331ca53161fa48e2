"""On-disk cache of tokenized splits (and precomputed reference values), keyed by what they were made from.

Entries are JSON (never pickle), written to a temporary file and renamed into place, so a run
killed mid-write never leaves a truncated entry behind. Each entry carries the settings it was
made with and a SHA-256 of its content; an entry whose checksum, settings or shape do not match
is reported in one line (a warning on the ``preflight`` logger) and rebuilt, never used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger("preflight.cache")

CACHE_VERSION = 3  # 3: scores as float32, rows identical after truncation dropped


def default_cache_dir() -> Path:
    root = os.environ.get("PREFLIGHT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "preflight"
    )
    return Path(root) / "tokenized"


def plain(parts: dict[str, Any]) -> dict[str, Any]:
    """The settings as they read back from JSON (what an entry stores and is compared with)."""
    return json.loads(json.dumps(parts, sort_keys=True, default=str))


def _settings(parts: dict[str, Any]) -> dict[str, Any]:
    return plain({"version": CACHE_VERSION, **parts})


def report_rebuild(path: Path, problem: str) -> None:
    """The one line that says a cache entry is not used, and why."""
    log.warning("preflight: cache entry %s %s: rebuilding it", path, problem)


def cache_key(**parts: Any) -> str:
    blob = json.dumps(_settings(parts), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def checksum(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def load(
    directory: Path, key: str, settings: dict[str, Any] | None = None, check: Callable[[dict], str | None] | None = None
) -> dict | None:
    """The payload stored under `key`, or None when there is none or it does not verify (then it is reported).

    `settings` are the parts the key was made from (compared with those stored); `check(payload)` returns
    what is wrong with a payload's shape, or None."""
    path = directory / f"{key}.json"
    if not path.is_file():
        return None
    try:
        with open(path, encoding="utf-8") as f:
            entry = json.load(f)
        problem = _problem(entry, settings, check)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        problem = f"unreadable ({type(err).__name__})"
    if problem:
        report_rebuild(path, problem)
        return None
    return entry["payload"]


def _problem(entry: Any, settings: dict[str, Any] | None, check) -> str | None:
    if not isinstance(entry, dict) or not {"payload", "checksum", "settings"} <= entry.keys():
        return "is not a preflight cache entry"
    if entry["checksum"] != checksum(entry["payload"]):
        return "does not match its checksum (changed or damaged)"
    if settings is not None and entry["settings"] != _settings(settings):
        return "was made with other settings"
    return check(entry["payload"]) if check is not None else None


def store(directory: Path, key: str, payload: dict, settings: dict[str, Any] | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{key}.json"
    entry = {"settings": _settings(settings or {}), "checksum": checksum(payload), "payload": payload}
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{key}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(entry, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
