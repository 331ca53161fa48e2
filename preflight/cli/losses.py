"""`preflight losses`: every registered loss, plugins included."""

from __future__ import annotations

import argparse

from .command import ArgparseCommand
from ..user_imports import import_user_modules


class LossesCommand(ArgparseCommand):
    name = "losses"
    summary = "list every registered loss with its hyperparameters, reference needs and paper"
    description = "List every registered loss (plugins included)."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--imports", nargs="*", default=[], help="modules that register more losses")

    def execute(self, ns: argparse.Namespace) -> None:
        from ..losses.catalog import format_catalog, loss_catalog

        import_user_modules(ns.imports)
        print(format_catalog(loss_catalog()))
