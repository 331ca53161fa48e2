"""What the package ships: the tiny model config, tokenizer, data and chat templates (``assets/``) and the example
configs (``configs/``), inside the package so that an installed wheel has them (as torchtune ships its recipe configs).

The configs name these files by relative paths (``assets/tiny-llama``, ``assets/data/train.jsonl``). In the checkout
the folders ``assets`` and ``configs`` at the repository root are links to the package's, so those paths are real
files there. Elsewhere (an installed wheel, any working folder) a relative path under ``assets/`` or ``configs/``
that does not exist in the working folder names the shipped copy: `shipped_path`. A file of the user's own at such a
path always wins.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
SHIPPED_FOLDERS = ("assets", "configs")


def shipped_path(spec: str | os.PathLike) -> str:
    """`spec` itself when it exists (or is not a relative ``assets/...`` or ``configs/...`` path), else the path of
    the copy shipped in the package, when there is one."""
    text = os.fspath(spec)
    path = Path(text)
    if path.is_absolute() or path.exists() or not path.parts or path.parts[0] not in SHIPPED_FOLDERS:
        return text
    packaged = PACKAGE.joinpath(*path.parts)
    return str(packaged) if packaged.exists() else text


def shipped_configs() -> dict[str, Path]:
    """The shipped example configs by name (``dpo`` for ``configs/dpo.yaml``)."""
    return {path.stem: path for path in sorted((PACKAGE / "configs").glob("*.yaml"))}


def shipped_config(name: str) -> Path | None:
    """The shipped config a name means: ``dpo``, ``dpo.yaml`` or ``configs/dpo.yaml``; None for any other name."""
    path = Path(name)
    if path.parts[:1] == ("configs",):
        path = Path(*path.parts[1:]) if len(path.parts) > 1 else Path("")
    if len(path.parts) != 1 or path.suffix not in ("", ".yaml"):
        return None
    return shipped_configs().get(path.stem)
