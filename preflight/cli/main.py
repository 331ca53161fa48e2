"""The `preflight` command: a table of subcommands (`COMMANDS`), the exit status each kind of failure gets, and the
way a distributed process leaves.

Bad configuration ends with one line on stderr and exit status 2 (``PREFLIGHT_DEBUG=1`` for the traceback); a
failure of the run itself keeps its traceback and exits 1; SIGINT and SIGTERM exit 130 and 143.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from jsonargparse import ArgumentError
from lightning.pytorch.utilities.exceptions import SIGTERMException

from ..interrupts import Interrupted
from ..errors import PreflightConfigError
from ..modules import NonFiniteError
from ..process_exit import closed_a_process_group, leave_process
from .command import Command
from .copy_config import CopyConfigCommand
from .experiment import ExperimentCommand
from .export import ExportCommand
from .iterate import IterateCommand
from ..train import SUBCOMMANDS
from .lightning import TrainingCommand
from .losses import LossesCommand
from .output import (
    EXIT_CONFIG_ERROR,
    EXIT_FAILED,
    EXIT_SIGNAL,
    one_line,
    quiet_third_party,
    show_preflight_warnings,
    version_line,
)
from .plot import PlotCommand

COMMANDS: dict[str, Command] = {
    command.name: command
    for command in (
        *(TrainingCommand(name) for name in SUBCOMMANDS),
        IterateCommand(),
        ExportCommand(),
        LossesCommand(),
        PlotCommand(),
        ExperimentCommand(),
        CopyConfigCommand(),
    )
}


def top_level_help() -> str:
    names = ",".join(COMMANDS)
    lines = [f"usage: preflight {{{names}}} ... | --version", ""]
    lines.append("preflight: preference optimization (DPO, IPO, reward models and more) with PyTorch Lightning.")
    lines += ["", "commands:"]
    lines += [f"  {name:<10} {command.summary}" for name, command in COMMANDS.items()]
    lines += [
        "",
        "Each command takes --help. Runs write to runs/<run name>/version_N (config, metrics.csv, checkpoints).",
        "The configs/ and assets/ paths of the examples are shipped with the package: they work from any folder.",
    ]
    return "\n".join(lines) + "\n"


def run_command(argv: list[str] | None = None) -> None:
    """The command, ending with `sys.exit(status)` where the status is not 0."""
    argv = sys.argv[1:] if argv is None else list(argv)
    quiet_third_party()
    show_preflight_warnings()
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())  # the user's own modules (e.g. losses) importable, never shadowing packages
    try:
        if argv[:1] in ([], ["-h"], ["--help"]):
            print(top_level_help())
        elif argv[:1] in (["--version"], ["-V"]):
            print(version_line())
        elif argv[0] in COMMANDS:
            COMMANDS[argv[0]].run(argv[1:])
        else:
            TrainingCommand.parse(argv)  # LightningCLI's own message for an unknown subcommand
    except SIGTERMException as err:  # a SystemExit with status 0 from Lightning: never report success
        interrupted = getattr(err, "preflight_interrupted", None) or Interrupted("SIGTERM", -1, None)
        print(f"preflight: {interrupted}", file=sys.stderr, flush=True)
        sys.exit(EXIT_SIGNAL["SIGTERM"])
    except Interrupted as err:
        print(f"preflight: {err}", file=sys.stderr, flush=True)
        sys.exit(EXIT_SIGNAL.get(err.signal_name, EXIT_FAILED))
    except NonFiniteError as err:
        print(f"preflight: error: {one_line(err)}", file=sys.stderr)
        sys.exit(EXIT_FAILED)
    except (ValueError, OSError, TypeError, ArgumentError, argparse.ArgumentError) as err:
        during_run = getattr(err, "preflight_during_run", False)
        if os.environ.get("PREFLIGHT_DEBUG") or (during_run and not isinstance(err, PreflightConfigError)):
            raise  # a failure of the run itself, not of its configuration: keep the traceback
        print(f"preflight: error: {one_line(err)}", file=sys.stderr)
        sys.exit(EXIT_CONFIG_ERROR)


def main(argv: list[str] | None = None) -> None:
    """The `preflight` command; a process that ran a distributed fit leaves with its status through
    `process_exit.leave_process`."""
    try:
        run_command(argv)
    except SystemExit as exit_:
        if not closed_a_process_group():
            raise
        if exit_.code is None or isinstance(exit_.code, int):
            leave_process(exit_.code or 0)
        print(exit_.code, file=sys.stderr)  # as the interpreter does with sys.exit("message")
        leave_process(EXIT_FAILED)
    except BaseException:
        if not closed_a_process_group():
            raise
        traceback.print_exc()  # what the interpreter would print for a failure of the run itself
        leave_process(EXIT_FAILED)
    if closed_a_process_group():
        leave_process(0)
