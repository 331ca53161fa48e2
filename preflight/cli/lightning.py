"""The `preflight` command: a LightningCLI over preflight's modules and `PreferenceDataModule`.

    preflight fit --config configs/dpo.yaml [--model.loss ipo] [--trainer.max_steps 100]
    preflight validate|test --config ... --ckpt_path last
    preflight export CKPT_OR_RUN_FOLDER OUT [--no-merge-lora] [--tokenizer PATH]
    preflight losses

Each run writes to ``{trainer.default_root_dir}/{run_name}/version_N`` (see `preflight.runs`);
the run name follows the loss actually selected, overrides included. Configs may use OmegaConf
interpolation. Loss plugins (entry points ``preflight.losses``) and the modules named by
``--imports`` are loaded before the classes are built. Bad configuration ends with one line on
stderr and exit status 2 (``PREFLIGHT_DEBUG=1`` for the traceback).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import os
import re
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any

import lightning as L
from jsonargparse import ArgumentError
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities.exceptions import SIGTERMException

from .callbacks import FitSummary, Interrupted, SaveOnInterrupt, StepProgressBar, ValidateFinalWeights
from .errors import PreflightConfigError
from .checkpointing import AtomicCheckpointIO
from .datamodules import PreferenceDataModule
from .losses.registry import build_loss, load_entry_points
from .modules import NonFiniteError, PreflightModule
from .process_exit import close_process_group, closed_a_process_group, leave_process
from .resume import check_checkpoint_matches, checkpoint_metadata, finished_by
from .runs import RunLogger, latest_checkpoint, resolve_checkpoint, run_location

SUBCOMMANDS = ("fit", "validate", "test")
EXIT_CONFIG_ERROR, EXIT_FAILED = 2, 1
EXIT_SIGNAL = {"SIGINT": 130, "SIGTERM": 143}
DEFAULT_ROOT = "runs"
TOP_LEVEL_HELP = """usage: preflight {fit,validate,test,export,losses,plot,experiment} ... | --version

preflight: preference optimization (DPO, IPO, reward models and more) with PyTorch Lightning.

commands:
  fit        train a module:                  preflight fit --config configs/dpo.yaml
  validate   validate a checkpoint:           preflight validate --config configs/dpo.yaml --ckpt_path last
  test       test a checkpoint on data.test:  preflight test --config ... --ckpt_path last
  export     write a Hugging Face folder:     preflight export runs/dpo out/dpo-model
  losses     list every registered loss with its hyperparameters, reference needs and paper
  plot       draw a run's logged metrics:     preflight plot runs/dpo  (needs pip install 'preflight-lightning[plots]')
  experiment experiments against a known reward: preflight experiment {bandit,frontier} --losses dpo,ipo

Each command takes --help. Runs write to runs/<run name>/version_N (config, metrics.csv, checkpoints).
"""


def version_line() -> str:
    """``preflight X.Y.Z (distribution preflight-lightning)``: the installed distribution's version."""
    from importlib.metadata import PackageNotFoundError, version

    from . import DISTRIBUTION, __version__

    try:
        installed = version(DISTRIBUTION)
    except PackageNotFoundError:  # run from a checkout that was never installed
        installed = __version__
    return f"preflight {installed} (distribution {DISTRIBUTION}: pip install {DISTRIBUTION})"


def import_user_modules(names: list[str] | None) -> None:
    """Import the modules a user named (``my_losses`` or ``path/to/my_losses.py``): their decorators run."""
    for name in names or ():
        try:
            if name.endswith(".py"):
                path = Path(name)
                if not path.is_file():
                    raise ValueError(f"imports: {name}: file not found")
                spec = importlib.util.spec_from_file_location(path.stem, path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[path.stem] = module
                spec.loader.exec_module(module)
            else:
                importlib.import_module(name)
        except ModuleNotFoundError as err:
            raise ValueError(f"imports: cannot import {name!r} ({err})") from None


class RunConfigSaver(SaveConfigCallback):
    """Saves the config of each command into its run folder: ``config.yaml`` for fit, and
    ``validate_config.yaml`` / ``test_config.yaml`` beside it, so no command overwrites another's."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.state.fn is not None and trainer.state.fn.value != "fit":
            self.config_filename = f"{trainer.state.fn.value}_config.yaml"
        super().setup(trainer, pl_module, stage)


class PreflightCLI(LightningCLI):
    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {name: spec for name, spec in LightningCLI.subcommands().items() if name in SUBCOMMANDS}

    def add_arguments_to_parser(self, parser) -> None:
        from jsonargparse import lazy_instance

        from .modules import PreferenceModule

        parser.set_defaults({"model": lazy_instance(PreferenceModule)})
        parser.add_argument(
            "--run_name",
            type=str | None,
            default=None,
            help="folder of this run under trainer.default_root_dir (default: the loss name, "
            "'_lora' added with peft; reward models: 'reward_model')",
        )
        parser.add_argument(
            "--imports",
            type=list[str] | str,
            default=[],
            help="modules (names, or .py files) to import before building the classes, "
            "e.g. a file that registers your own losses with @register_loss",
        )
        parser.add_argument(
            "--allow_changed_config",
            type=bool,
            default=False,
            help="resume or validate a checkpoint whose module, model, loss or peft settings "
            "differ from this config's (refused otherwise)",
        )
        # One trust_remote_code for model and tokenizer; the data module's follows the model's.
        parser.link_arguments("model.init_args.trust_remote_code", "data.trust_remote_code")

    def _run_subcommand(self, subcommand: str) -> None:
        """Run it; an error from here on is a configuration error only if it says so (`PreflightConfigError`).
        A fit resumed from a checkpoint that already reached its limit does not run (`_resolve_checkpoint` said so)."""
        if getattr(self, "_nothing_to_train", False):
            return
        interrupt = next((c for c in self.trainer.callbacks if isinstance(c, SaveOnInterrupt)), None)
        if interrupt is not None:
            interrupt.install()
        try:
            super()._run_subcommand(subcommand)
        except BaseException as err:
            err.preflight_during_run = True
            self._remove_unfinished_run_folder(err)
            raise
        finally:
            if interrupt is not None:
                interrupt.uninstall()

    def _remove_unfinished_run_folder(self, err: BaseException) -> None:
        """A configuration error found once the run started (a model that cannot be built, a fast path set to
        on that is not exact) leaves no new run folder behind, unless it already holds checkpoints."""
        folder = getattr(self, "_new_run_folder", None)
        if (
            isinstance(err, PreflightConfigError)
            and folder is not None
            and folder.is_dir()
            and self.trainer.is_global_zero
        ):
            if not any(folder.glob("checkpoints/*.ckpt")):
                import shutil

                shutil.rmtree(folder, ignore_errors=True)
                for parent in (folder.parent, folder.parent.parent):  # the run and root folders, if now empty
                    try:
                        parent.rmdir()
                    except OSError:
                        break

    def _parse_ckpt_path(self) -> None:
        """LightningCLI copies a checkpoint's hyperparameters over the config; preflight never does:
        the model source and ``trust_remote_code`` come from the config and the command line only.
        A checkpoint that disagrees with the config is refused (`check_checkpoint_matches`)."""

    def before_instantiate_classes(self) -> None:
        names = self._get(self.config, "imports")
        import_user_modules([names] if isinstance(names, str) else names)

    # ------------------------------------------------------------------ the trainer
    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        if self.subcommand in SUBCOMMANDS and isinstance(self.datamodule, PreferenceDataModule):
            # Read and check the data before the trainer exists, so bad data leaves no run folder behind.
            self.datamodule.setup(self.subcommand)
            if _is_main_process():
                print(f"preflight: data: {self.datamodule.describe(self.subcommand)}", flush=True)
                for report in self.datamodule.problem_reports(self.subcommand):
                    print(f"preflight: data: {report}", flush=True)
        trainer_config = self._get(self.config_init, "trainer", default={})
        default_run = (
            Path(trainer_config.get("default_root_dir") or DEFAULT_ROOT),
            self._get(self.config, "run_name") or self.model.run_name(),
        )
        located = self._resolve_checkpoint(default_run)
        if trainer_config.get("logger") in (None, True):
            # a resumed or validated run keeps logging in its checkpoint's folder, else a new version of the run
            run_root, name, version = located or (*default_run, None)
            # absolute, so a resumed run's checkpoint folder is recognized as the same (its `last.ckpt` is replaced)
            logger = RunLogger(save_dir=str(Path(run_root).absolute()), name=name, version=version)
            kwargs["logger"] = logger
            if version is None and _is_main_process():
                self._new_run_folder = Path(logger.log_dir)
        if trainer_config.get("plugins") is None:
            kwargs["plugins"] = [AtomicCheckpointIO()]
        callbacks = list(trainer_config.get("callbacks") or [])
        if trainer_config.get("enable_progress_bar") is not False and not any(
            isinstance(c, ProgressBar) for c in callbacks
        ):
            from lightning.pytorch.callbacks.progress.rich_progress import _RICH_AVAILABLE

            if _RICH_AVAILABLE:
                self.trainer_defaults["callbacks"].append(StepProgressBar())
        return super().instantiate_trainer(**kwargs)

    def _resolve_checkpoint(self, default_run: tuple[Path, str]) -> tuple[Path, str, int] | None:
        """Turn ``--ckpt_path last`` into the newest ``last.ckpt`` of the run, check that the checkpoint belongs
        to this config, and return (root, run name, version) of the run folder it is in (None: a new run)."""
        if self.subcommand not in SUBCOMMANDS:
            return None
        spec = self._get(self.config_init, "ckpt_path")
        if not spec or spec in ("best", "hpc", "registry"):
            return None
        run_dir = default_run[0] / default_run[1]
        if spec == "last":
            newest = latest_checkpoint(run_dir, self._checkpoint_folders())
            if newest is None:
                if self.subcommand == "fit":
                    return None  # nothing to resume: a fresh run, as Lightning does for "last"
                raise FileNotFoundError(f"--ckpt_path last: no checkpoint under {run_dir}/version_*/checkpoints")
            spec = str(newest)
        path = resolve_checkpoint(spec)
        meta = checkpoint_metadata(path)
        if not self._get(self.config, "allow_changed_config"):
            check_checkpoint_matches(path, self.model, meta)
        self.config_init[self.subcommand]["ckpt_path"] = str(path)
        if self.subcommand == "fit":
            trainer_config = self._get(self.config_init, "trainer", default={})
            reached = finished_by(meta, trainer_config.get("max_steps"), trainer_config.get("max_epochs"))
            self._nothing_to_train = reached is not None
            step = int(meta.get("global_step") or 0)
            if reached and _is_main_process():
                print(
                    f"preflight: {path} already reached {reached} (step {step}): nothing to train; raise "
                    f"--trainer.{reached.split('=')[0]} to train on",
                    flush=True,
                )
            elif _is_main_process():
                print(f"preflight: resuming {path} (step {step})", flush=True)
        return run_location(path)

    def _checkpoint_folders(self) -> list[str]:
        """The ``dirpath`` of every `ModelCheckpoint` the config adds (one without writes into the run's folder)."""
        callbacks = self._get(self.config_init, "trainer", default={}).get("callbacks") or []
        return [c.dirpath for c in callbacks if isinstance(c, ModelCheckpoint) and c.dirpath]


def _is_main_process() -> bool:
    return os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"


def build_cli(
    args: list[str] | None = None, run: bool = True, cli_class: type[PreflightCLI] = PreflightCLI
) -> PreflightCLI:
    """The CLI; with ``run=False`` it parses and instantiates without a subcommand (no ``fit`` in `args`)."""
    load_entry_points()
    parser_kwargs: dict[str, Any] = {"parser_mode": "omegaconf", "exit_on_error": False, "prog": "preflight"}
    return cli_class(
        PreflightModule,
        PreferenceDataModule,
        subclass_mode_model=True,
        auto_configure_optimizers=False,
        trainer_defaults={
            "callbacks": [ValidateFinalWeights(), FitSummary(), SaveOnInterrupt()],
            "default_root_dir": DEFAULT_ROOT,
        },
        save_config_callback=RunConfigSaver,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={
            **parser_kwargs,
            "description": "preflight: preference optimization with PyTorch Lightning",
            **{name: dict(parser_kwargs) for name in SUBCOMMANDS},
        },
        args=args,
        run=run,
    )


def one_line(err: BaseException) -> str:
    """The message that says what is wrong, on one line.

    jsonargparse wraps errors raised while building a class in "Does not validate against
    any of the Union subtypes ..."; the original error is in the exception chain.
    """
    chain, seen = [], set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        chain.append(err)
        err = err.__cause__ or (None if err.__suppress_context__ else err.__context__)
    ours = [e for e in chain if isinstance(e, PreflightConfigError)]
    useful = ours[:1] or [
        e
        for e in chain
        if isinstance(e, (ValueError, OSError, TypeError, NonFiniteError)) and "Union subtypes" not in str(e)
    ]
    text = re.sub(r"\s+", " ", str(useful[-1] if useful else chain[0])).strip()
    nested = re.search(r"Errors: - (.*?) - Expected a <class 'NoneType'>", text)
    if nested:
        key = re.match(r'Parser key "([^"]+)"', text)
        text = (f"{key.group(1)}: " if key else "") + nested.group(1).replace("Problem with given class_path ", "")
    return text or type(chain[0]).__name__


def export_main(argv: list[str]) -> None:
    from .export import export_checkpoint

    parser = argparse.ArgumentParser(
        prog="preflight export", description="Write a checkpoint as a Hugging Face model folder."
    )
    parser.add_argument("checkpoint", help="a .ckpt written by preflight fit, or a run folder (its newest last.ckpt)")
    parser.add_argument("out", help="the folder to write (replaced if it exists)")
    parser.add_argument("--no-merge-lora", dest="merge_lora", action="store_false", help="save the LoRA adapter alone")
    parser.add_argument("--tokenizer", help="tokenizer to save with it (default: the one the data module used)")
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow model code from the model's folder or the Hub (never taken from the checkpoint)",
    )
    parser.add_argument(
        "--imports",
        nargs="*",
        default=[],
        help="modules defining your own module subclasses or losses, to allow building them",
    )
    ns = parser.parse_args(argv)
    import_user_modules(ns.imports)
    path = resolve_checkpoint(ns.checkpoint)
    out = export_checkpoint(
        path, ns.out, merge_lora=ns.merge_lora, tokenizer=ns.tokenizer, trust_remote_code=ns.trust_remote_code
    )
    print(f"preflight: exported {path} to {out}")


class CommandCLI(PreflightCLI):
    """The CLI as the `preflight` command runs it: a distributed run's process group is closed as soon as the
    subcommand ends, and the process then leaves through `process_exit.leave_process` (see `preflight.process_exit`)."""

    def _run_subcommand(self, subcommand: str) -> None:
        try:
            super()._run_subcommand(subcommand)
        finally:
            close_process_group()


def plot_main(argv: list[str]) -> None:
    from .plots import plot_run

    parser = argparse.ArgumentParser(prog="preflight plot", description="Draw a run's logged metrics as PNG curves.")
    parser.add_argument("run", help="a run folder (runs/dpo: its newest version), a version folder, or a metrics.csv")
    parser.add_argument("--out", help="the folder to write the PNGs to (default: plots/ beside metrics.csv)")
    ns = parser.parse_args(argv)
    for name, (file, series) in plot_run(ns.run, ns.out).items():
        print(f"preflight: plot: {file} ({', '.join(series)})")


def experiment_main(argv: list[str]) -> None:
    from .experiments.frontier import FrontierSettings

    default, quick = FrontierSettings(), FrontierSettings.quick()
    listed = lambda values: ",".join(map(str, values))  # noqa: E731
    parser = argparse.ArgumentParser(prog="preflight experiment", description="Experiments against a known reward.")
    commands = parser.add_subparsers(dest="experiment", required=True)
    bandit = commands.add_parser("bandit", help="the exact case: KL to the optimum of Eq. 3 against data, per loss")
    bandit.add_argument("--losses", default="dpo,ipo", help="registry names of the policy losses, comma-separated")
    bandit.add_argument("--beta", type=float, default=0.5, help="β of every loss and of the optimum")
    bandit.add_argument("--quick", action="store_true", help="3 sizes, 1 seed, fewer steps: about 10 seconds")
    bandit.add_argument("--out", default="experiments/bandit", help="the folder for the CSVs, summary and plot")
    bandit.add_argument("--imports", nargs="*", default=[], help="modules that register more losses")
    frontier = commands.add_parser(
        "frontier",
        help="true reward against KL to the reference, per loss and β, on a language task with a known reward",
    )
    frontier.add_argument(
        "--losses",
        help=f"registry names of the policy losses, comma-separated (default "
        f"{listed(default.losses)}; --quick: {listed(quick.losses)})",
    )
    frontier.add_argument(
        "--betas", help=f"the β grid, comma-separated (default {listed(default.betas)}; --quick: {listed(quick.betas)})"
    )
    frontier.add_argument("--seeds", type=int, default=1, help="training seeds per loss and β")
    frontier.add_argument("--quick", action="store_true", help="DPO at one β on a smaller task: about a minute")
    frontier.add_argument("--with-trl", action="store_true", help="also train TRL's DPOTrainer on the same pairs")
    frontier.add_argument("--out", default="experiments/frontier", help="the folder for the CSVs, summary and plot")
    frontier.add_argument("--imports", nargs="*", default=[], help="modules that register more losses")
    ns = parser.parse_args(argv)
    load_entry_points()
    import_user_modules(ns.imports)
    losses = tuple(name.strip() for name in (ns.losses or "").split(",") if name.strip())
    for name in losses:
        if build_loss({"name": name}).input_kind != "logps":  # an unknown name fails here, before any work
            raise PreflightConfigError(f"loss {name!r} trains a reward model, not a policy")
    (bandit_main if ns.experiment == "bandit" else frontier_main)(ns, losses)


def bandit_main(ns: argparse.Namespace, losses: tuple[str, ...]) -> None:
    from .experiments.bandit import BanditSettings, plot_bandit, run_bandit

    settings = BanditSettings.quick(losses) if ns.quick else BanditSettings(losses=losses)
    settings.beta = ns.beta
    out = Path(ns.out)
    tables = run_bandit(settings, out)
    print((out / "summary.md").read_text(), end="")
    for name in tables:
        print(f"preflight: experiment: wrote {out / (name + '.csv')}")
    _plot(plot_bandit, tables, settings, out / "bandit.png")


def frontier_main(ns: argparse.Namespace, losses: tuple[str, ...]) -> None:
    from dataclasses import replace

    from .experiments.frontier import FrontierSettings, plot_frontier, run_frontier

    settings = FrontierSettings.quick() if ns.quick else FrontierSettings()
    try:
        betas = tuple(float(b) for b in ns.betas.split(",")) if ns.betas else settings.betas
    except ValueError:
        raise PreflightConfigError(f"--betas {ns.betas!r}: give numbers separated by commas") from None
    if any(not b > 0 for b in betas):
        raise PreflightConfigError(f"--betas {ns.betas!r}: every β must be positive")
    if ns.seeds < 1:
        raise PreflightConfigError("--seeds must be at least 1")
    if ns.with_trl:
        try:
            import trl  # noqa: F401
        except ImportError:
            raise PreflightConfigError("--with-trl needs TRL: pip install trl") from None
    settings = replace(settings, losses=losses or settings.losses, betas=betas, seeds=ns.seeds, with_trl=ns.with_trl)
    out = Path(ns.out)
    result = run_frontier(settings, out)
    print((out / "summary.md").read_text(), end="")
    for name in ("frontier", "optimum"):
        print(f"preflight: experiment: wrote {out / (name + '.csv')}")
    _plot(plot_frontier, result, out / "frontier.png")


def _plot(function, *args) -> None:
    try:
        print(f"preflight: experiment: wrote {function(*args)}")
    except ImportError:
        print("preflight: experiment: no plot: pip install 'preflight-lightning[plots]' for matplotlib")


def losses_main(argv: list[str]) -> None:
    from .losses.catalog import format_catalog, loss_catalog

    parser = argparse.ArgumentParser(
        prog="preflight losses", description="List every registered loss (plugins included)."
    )
    parser.add_argument("--imports", nargs="*", default=[], help="modules that register more losses")
    ns = parser.parse_args(argv)
    import_user_modules(ns.imports)
    print(format_catalog(loss_catalog()))


class _OneLineToStderr(logging.Handler):
    """preflight's own warnings, as the lines they are, on whatever `sys.stderr` is now."""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        print(message if message.startswith("preflight") else f"preflight: {message}", file=sys.stderr, flush=True)


def show_preflight_warnings() -> None:
    logger = logging.getLogger("preflight")
    if not any(isinstance(h, _OneLineToStderr) for h in logger.handlers):
        logger.addHandler(_OneLineToStderr(level=logging.INFO))
        logger.setLevel(logging.INFO)
        logger.propagate = False


def quiet_third_party() -> None:
    """The command's output is about the run: no product tips, no other packages' deprecation notices
    (``PREFLIGHT_DEBUG=1`` or any ``-W`` option shows everything)."""
    if os.environ.get("PREFLIGHT_DEBUG") or sys.warnoptions:
        return
    for category in (DeprecationWarning, FutureWarning, PendingDeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
    warnings.filterwarnings("ignore", message=r".*is deprecated.*")
    # a resumed or validated run writes into its own version folder on purpose
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
        lambda record: "💡 Tip" not in str(record.getMessage())
    )


def run_command(argv: list[str] | None = None) -> None:
    """The command, ending with `sys.exit(status)` where the status is not 0."""
    explicit = argv is not None
    argv = sys.argv[1:] if argv is None else list(argv)
    quiet_third_party()
    show_preflight_warnings()
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())  # the user's own modules (e.g. losses) importable, never shadowing packages
    try:
        if argv[:1] in ([], ["-h"], ["--help"]):
            print(TOP_LEVEL_HELP)
        elif argv[:1] in (["--version"], ["-V"]):
            print(version_line())
        elif argv[:1] == ["export"]:
            export_main(argv[1:])
        elif argv[:1] == ["losses"]:
            losses_main(argv[1:])
        elif argv[:1] == ["plot"]:
            plot_main(argv[1:])
        elif argv[:1] == ["experiment"]:
            experiment_main(argv[1:])
        else:
            build_cli(argv if explicit else None, cli_class=CommandCLI)
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


if __name__ == "__main__":
    main()
