"""The `preflight` command: one class per subcommand (`main.COMMANDS`), the Lightning ones in `lightning`."""

from ..train import PreflightCLI, build_cli
from .lightning import CommandCLI
from .main import COMMANDS, main, run_command

__all__ = ["COMMANDS", "CommandCLI", "PreflightCLI", "build_cli", "main", "run_command"]
