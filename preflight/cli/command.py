"""What every `preflight` subcommand is: a class in the command table (`preflight.cli.main.COMMANDS`) with its name,
its line in the top-level help, and how it runs its arguments."""

from __future__ import annotations

import argparse
from typing import ClassVar


class Command:
    """One subcommand. ``name``: what the user types; ``summary``: its line in ``preflight --help``."""

    name: ClassVar[str]
    summary: ClassVar[str]

    def run(self, argv: list[str]) -> None:
        raise NotImplementedError


class ArgparseCommand(Command):
    """A subcommand whose arguments an `argparse` parser reads (`parser`), run on the parsed namespace (`execute`)."""

    description: ClassVar[str]

    def parser(self) -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(prog=f"preflight {self.name}", description=self.description)
        self.add_arguments(parser)
        return parser

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """The command's options."""

    def run(self, argv: list[str]) -> None:
        self.execute(self.parser().parse_args(argv))

    def execute(self, ns: argparse.Namespace) -> None:
        raise NotImplementedError
