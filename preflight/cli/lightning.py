"""`preflight fit | validate | test`: the command around `preflight.train.PreflightCLI`.

    preflight fit --config configs/dpo.yaml [--model.loss ipo] [--trainer.max_steps 100]
    preflight validate|test --config ... --ckpt_path last

``--config NAME`` that is no file here but a shipped config (``dpo``, ``configs/dpo.yaml``) runs the shipped one
(`preflight.shipped`); each config file is read as YAML first, so an error names the file.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import ClassVar

from jsonargparse import ArgumentError

from ..errors import PreflightConfigError
from ..process_exit import close_process_group
from ..shipped import shipped_config
from ..suggest import did_you_mean
from ..train import PreflightCLI, build_cli, is_main_process
from .command import Command
from .output import one_line


class CommandCLI(PreflightCLI):
    """The CLI as the `preflight` command runs it: a distributed run's process group is closed as soon as the
    subcommand ends, and the process then leaves through `process_exit.leave_process` (see `preflight.process_exit`)."""

    def _run_subcommand(self, subcommand: str) -> None:
        try:
            super()._run_subcommand(subcommand)
        finally:
            close_process_group()


class TrainingCommand(Command):
    """``preflight fit``, ``validate`` or ``test``: the Lightning subcommand of that name, through `CommandCLI`."""

    summaries: ClassVar[dict[str, str]] = {
        "fit": "train a module:                  preflight fit --config configs/dpo.yaml",
        "validate": "validate a checkpoint:           preflight validate --config configs/dpo.yaml --ckpt_path last",
        "test": "test a checkpoint on data.test:  preflight test --config ... --ckpt_path last",
    }

    def __init__(self, name: str) -> None:
        self.name, self.summary = name, self.summaries[name]

    def run(self, argv: list[str]) -> None:
        argv = with_shipped_configs(argv)
        check_config_files(argv)
        args = [self.name, *with_loss_name_kept(argv)]
        if {"-h", "--help"} & set(argv):
            self.full_help(args)
        self.parse(args)

    def full_help(self, args: list[str]) -> None:
        """LightningCLI's help, then the options of the default module (``--model.init_args.*``), which the former
        only names (the module is chosen by class path), with how to see the reward model's."""
        try:
            self.parse(args)
        except SystemExit as exit_:
            if exit_.code not in (0, None):
                raise
        print(
            "\nThe module's options (--model.init_args.NAME, or --model.NAME): those of preflight.PreferenceModule, "
            "the default; for a reward model: preflight fit --model.help preflight.RewardModule\n",
            flush=True,
        )
        self.parse([self.name, "--model.help", "preflight.PreferenceModule"])

    @staticmethod
    def parse(args: list[str]) -> None:
        # the arguments are passed on (rewritten for shipped configs), not read again from sys.argv
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended to run from within Python")
        try:
            build_cli(args, cli_class=CommandCLI)
        except (ArgumentError, ValueError) as err:
            hint = "" if getattr(err, "preflight_during_run", False) else did_you_mean(str(err))
            if not hint:
                raise
            raise PreflightConfigError(f"{one_line(err)}{hint}") from None


LOSS_KEYS = ("--model.loss", "--model.init_args.loss")


def with_loss_name_kept(argv: list[str]) -> list[str]:
    """``--model.loss NAME`` followed by ``--model.loss.KEY VALUE``: the name as a mapping (``{name: NAME}``), which the
    settings then fill in; a plain name would be replaced by a mapping of the settings alone, without its name."""
    settings = any(arg.startswith(tuple(f"{key}." for key in LOSS_KEYS)) for arg in argv)
    if not settings:
        return list(argv)
    out = list(argv)
    for i, arg in enumerate(out):
        key, eq, value = arg.partition("=")
        if key not in LOSS_KEYS:
            continue
        at = i if eq else i + 1
        value = value if eq else (out[i + 1] if i + 1 < len(out) else "")
        if re.fullmatch(r"[A-Za-z_][\w.-]*", value):
            out[at] = f"{key}={{name: {value}}}" if eq else f"{{name: {value}}}"
    return out


def check_config_files(argv: list[str]) -> None:
    """Each ``--config`` file read as YAML first, so that a syntax or tag error names the file (jsonargparse reports
    it in ``"<unicode string>"``); safe_load constructs no object a tag names."""
    import yaml

    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            path = argv[i + 1]
        elif arg.startswith("--config="):
            path = arg.split("=", 1)[1]
        else:
            continue
        if not Path(path).is_file():
            continue  # jsonargparse says so (or it is inline YAML)
        try:
            yaml.safe_load(Path(path).read_text())
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark else path
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            context = getattr(err, "context", None)
            raise PreflightConfigError(f"{where}: {problem}" + (f" ({context})" if context else "")) from None


def with_shipped_configs(argv: list[str]) -> list[str]:
    """`argv` with each ``--config NAME`` that names no file here but a shipped config replaced by that config's
    path (said in one line)."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--config" and i + 1 < len(out):
            at, value = i + 1, out[i + 1]
        elif arg.startswith("--config="):
            at, value = i, arg.split("=", 1)[1]
        else:
            continue
        shipped = None if Path(value).exists() else shipped_config(value)
        if shipped is None:
            continue
        out[at] = str(shipped) if at != i else f"--config={shipped}"
        if is_main_process():
            print(
                f"preflight: config {value}: the one shipped with preflight "
                f"(preflight cp {shipped.stem} . to edit a copy)"
            )
    return out
