"""`preflight cp CONFIG DEST`: a shipped example config copied for editing (as torchtune's ``tune cp``)."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from ..errors import PreflightConfigError
from ..shipped import shipped_config, shipped_configs
from .command import ArgparseCommand


class CopyConfigCommand(ArgparseCommand):
    name = "cp"
    summary = "copy a shipped config to edit:   preflight cp dpo my_dpo.yaml  (--list: the shipped configs)"
    description = (
        "Copy one of the configs shipped with preflight to a file of your own. Its assets/... paths keep naming the "
        "shipped tiny model, tokenizer and data wherever the copy is run."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("config", nargs="?", help="a shipped config: dpo, dpo.yaml or configs/dpo.yaml")
        parser.add_argument("dest", nargs="?", help="the file to write, or a folder to write CONFIG.yaml into")
        parser.add_argument("--list", action="store_true", help="list the shipped configs, with their first line")

    def execute(self, ns: argparse.Namespace) -> None:
        if ns.list:
            for name, path in shipped_configs().items():
                print(f"{name:<28} {describe(path)}")
            return
        if not ns.config or not ns.dest:
            raise PreflightConfigError("cp: give a shipped config and a destination: preflight cp dpo my_dpo.yaml")
        source = shipped_config(ns.config)
        if source is None:
            names = ", ".join(shipped_configs())
            raise PreflightConfigError(f"cp: {ns.config!r} is not a shipped config (shipped: {names})")
        dest = Path(ns.dest)
        if dest.is_dir():
            dest = dest / source.name
        if dest.exists():
            raise PreflightConfigError(f"cp: {dest} exists: remove it first or choose another name")
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(f".{dest.name}.partial")
        shutil.copyfile(source, partial)
        partial.replace(dest)  # nothing half-written at dest
        print(f"preflight: copied configs/{source.name} to {dest}; run it with: preflight fit --config {dest}")


def describe(path: Path) -> str:
    """A config's first comment line."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""
