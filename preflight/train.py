"""One fit, one validation or one test: `PreflightCLI` (a LightningCLI over preflight's modules and
`PreferenceDataModule`) and `fit`, which the `preflight fit` command and `preflight iterate`'s rounds both run.

Each run writes to ``{trainer.default_root_dir}/{run name}/version_N`` (see `preflight.runs`); the run name is
``--run_name``, else the name of the first ``--config`` file, else the loss. Configs may use OmegaConf
interpolation. Loss plugins (entry points ``preflight.losses``) and the modules named by ``--imports`` are loaded
before the classes are built.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
from jsonargparse import ArgumentError
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

from .checkpointing import AtomicCheckpointIO
from .datamodules import PreferenceDataModule
from .errors import PreflightConfigError
from .final_weights import SaveFinalWeights, ValidateFinalWeights
from .interrupts import SaveOnInterrupt
from .losses.registry import load_entry_points
from .messages import one_line
from .modules import PreflightModule
from .pretrained import weights_from_checkpoint
from .reporting import FitSummary, StepProgressBar
from .resume import check_checkpoint_matches, checkpoint_metadata, finished_by
from .runs import RunLogger, latest_checkpoint, resolve_checkpoint, run_location
from .strategies import FSDP2Strategy, as_fsdp2
from .suggest import did_you_mean
from .user_imports import import_user_modules

SUBCOMMANDS = ("fit", "validate", "test")
DEFAULT_ROOT = "runs"


class RunConfigSaver(SaveConfigCallback):
    """Saves the config of each command into its run folder: ``config.yaml`` for fit, and
    ``validate_config.yaml`` / ``test_config.yaml`` beside it, so no command overwrites another's."""

    quiet = False  # set around the baseline validation a fit starts with: nothing to save for it

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.quiet:
            return
        if trainer.state.fn is not None and trainer.state.fn.value != "fit":
            self.config_filename = f"{trainer.state.fn.value}_config.yaml"
        super().setup(trainer, pl_module, stage)


class PreflightCLI(LightningCLI):
    """LightningCLI over preflight's modules and `PreferenceDataModule`: run folders, checkpoint checks on resume, the
    data read before the trainer exists, the baseline validation, and the callbacks every fit gets."""

    #: a fit resumed from a checkpoint that already reached its limit: nothing runs
    nothing_to_train: bool = False
    #: the step of the checkpoint a run resumes or validates (None: no checkpoint)
    checkpoint_position: int | None = None
    #: the version folder this run created (removed again if a configuration error stops it before any checkpoint)
    new_run_folder: Path | None = None

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
            "--validate_before_fit",
            type=bool,
            default=True,
            help="fit: validate the initial weights first and log them at step 0, the baseline of every val/ curve "
            "(TRL's eval_on_start); not when resuming a checkpoint",
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
        if self.nothing_to_train:
            return
        interrupt = next((c for c in self.trainer.callbacks if isinstance(c, SaveOnInterrupt)), None)
        if interrupt is not None:
            interrupt.install()
        try:
            if subcommand == "fit":
                self._validate_before_fit()
                for logger in self.trainer.loggers:
                    if isinstance(logger, RunLogger):
                        logger.step_shift = 1  # train and validation rows at the step whose weights they measured
            with weights_from_checkpoint(bool(self._get(self.config_init, "ckpt_path"))):
                super()._run_subcommand(subcommand)
        except BaseException as err:
            err.preflight_during_run = True
            self._remove_unfinished_run_folder(err)
            raise
        finally:
            if interrupt is not None:
                interrupt.uninstall()

    def _validate_before_fit(self) -> None:
        """The baseline: a validation of the initial weights, logged at step 0 (TRL's ``eval_on_start``), unless
        ``validate_before_fit`` is false, the fit resumes a checkpoint, or there is nothing to validate."""
        trainer = self.trainer
        if not self._get(self.config, "validate_before_fit") or self._get(self.config_init, "ckpt_path"):
            return
        if trainer.limit_val_batches == 0 or trainer.fast_dev_run:
            return
        datamodule = self.datamodule
        if isinstance(datamodule, PreferenceDataModule) and datamodule.dataset("val") is None:
            return
        saver = next((c for c in trainer.callbacks if isinstance(c, RunConfigSaver)), None)
        if saver is not None:
            saver.quiet = True  # the fit that follows saves the run's config.yaml
        inference = trainer.validate_loop.inference_mode
        trainer.validate_loop.inference_mode = False  # tensors it creates (metric states) are trained with next
        try:
            trainer.validate(self.model, datamodule=datamodule, verbose=False)
        finally:
            trainer.validate_loop.inference_mode = inference
            if saver is not None:
                saver.quiet = False

    def _remove_unfinished_run_folder(self, err: BaseException) -> None:
        """A configuration error found once the run started (a model that cannot be built, a fast path set to
        on that is not exact) leaves no new run folder behind, unless it already holds checkpoints."""
        folder = self.new_run_folder
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
        trainer = self._get(self.config, "trainer")
        if trainer is not None and trainer.get("strategy") is not None:
            trainer["strategy"] = as_fsdp2(trainer["strategy"])  # data-parallel over every process

    # ------------------------------------------------------------------ the trainer
    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        if self.subcommand in SUBCOMMANDS and isinstance(self.datamodule, PreferenceDataModule):
            # Read and check the data before the trainer exists, so bad data leaves no run folder behind.
            if is_main_process():  # one process per machine tokenizes (as Lightning runs prepare_data)
                self.datamodule.prepare_splits(self.subcommand)
            self.datamodule.setup(self.subcommand)
            if is_main_process():
                print(f"preflight: data: {self.datamodule.describe(self.subcommand)}", flush=True)
                for report in self.datamodule.problem_reports(self.subcommand):
                    print(f"preflight: data: {report}", flush=True)
        trainer_config = self._get(self.config_init, "trainer", default={})
        default_run = (
            Path(trainer_config.get("default_root_dir") or DEFAULT_ROOT),
            self._get(self.config, "run_name") or self._config_run_name() or self.model.run_name(),
        )
        located = self._resolve_checkpoint(default_run)
        if trainer_config.get("logger") in (None, True):
            # a resumed or validated run keeps logging in its checkpoint's folder, else a new version of the run
            run_root, name, version = located or (*default_run, None)
            # absolute, so a resumed run's checkpoint folder is recognized as the same (its `last.ckpt` is replaced)
            logger = RunLogger(save_dir=str(Path(run_root).absolute()), name=name, version=version)
            if self.subcommand in ("validate", "test") and self.checkpoint_position:
                # a checkpoint's validation is measured at the checkpoint's step, not at 0
                logger.step_override = self.checkpoint_position
            kwargs["logger"] = logger
            if version is None and is_main_process():
                self.new_run_folder = Path(logger.log_dir)
        if trainer_config.get("plugins") is None:
            kwargs["plugins"] = [AtomicCheckpointIO()]
        callbacks = list(trainer_config.get("callbacks") or [])
        if trainer_config.get("enable_progress_bar") is not False and not any(
            isinstance(c, ProgressBar) for c in callbacks
        ):
            from lightning.pytorch.callbacks.progress.rich_progress import _RICH_AVAILABLE

            if _RICH_AVAILABLE:
                self.trainer_defaults["callbacks"].append(StepProgressBar())
        trainer = super().instantiate_trainer(**kwargs)
        if isinstance(trainer.strategy, FSDP2Strategy):
            trainer.strategy.check_sizes()  # before the run folder or any process exists
        return trainer

    def _config_run_name(self) -> str | None:
        """The name of the first ``--config`` file (``configs/dpo.yaml``: ``dpo``): a run is named for what describes
        it, so overrides (another loss, LoRA) stay in its folder, where ``--ckpt_path last`` finds its checkpoint and
        refuses to resume it with other settings."""
        configs = self._get(self.config, "config") or []
        for config in configs if isinstance(configs, list) else [configs]:
            if config is not None:
                return Path(str(getattr(config, "relative", config))).stem
        return None

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
                    self.config_init[self.subcommand]["ckpt_path"] = None  # a fresh run, without Lightning's warning
                    if is_main_process():
                        print(
                            f"preflight: --ckpt_path last: no checkpoint under {run_dir}/version_*/checkpoints yet: "
                            "starting a new run",
                            flush=True,
                        )
                    return None  # nothing to resume: a fresh run, as Lightning does for "last"
                raise FileNotFoundError(f"--ckpt_path last: no checkpoint under {run_dir}/version_*/checkpoints")
            spec = str(newest)
        path = resolve_checkpoint(spec)
        meta = checkpoint_metadata(path)
        self.checkpoint_position = int(meta.get("global_step") or 0)
        if not self._get(self.config, "allow_changed_config"):
            check_checkpoint_matches(path, self.model, meta)
        self.config_init[self.subcommand]["ckpt_path"] = str(path)
        if self.subcommand == "fit":
            trainer_config = self._get(self.config_init, "trainer", default={})
            reached = finished_by(meta, trainer_config.get("max_steps"), trainer_config.get("max_epochs"))
            self.nothing_to_train = reached is not None
            step = self.checkpoint_position
            if reached and is_main_process():
                print(
                    f"preflight: {path} already reached {reached} (step {step}): nothing to train; raise "
                    f"--trainer.{reached.split('=')[0]} to train on",
                    flush=True,
                )
            elif is_main_process():
                print(f"preflight: resuming {path} (step {step})", flush=True)
        return run_location(path)

    def _checkpoint_folders(self) -> list[str]:
        """The ``dirpath`` of every `ModelCheckpoint` the config adds (one without writes into the run's folder)."""
        callbacks = self._get(self.config_init, "trainer", default={}).get("callbacks") or []
        return [c.dirpath for c in callbacks if isinstance(c, ModelCheckpoint) and c.dirpath]


def is_main_process() -> bool:
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
            "callbacks": [ValidateFinalWeights(), SaveFinalWeights(), FitSummary(), SaveOnInterrupt()],
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


class ParseOnlyCLI(PreflightCLI):
    """Parses and checks a ``fit`` config as the command would (keys, types, class paths), building nothing."""

    def _set_seed(self) -> None:
        pass

    def instantiate_classes(self) -> None:
        pass

    def _run_subcommand(self, subcommand: str) -> None:
        pass


def validate_fit_config(path: str | Path, where: str) -> None:
    """Refuse, in one line prefixed with `where` (``fit``: the key the config sits under), a ``preflight fit`` config
    that does not parse: an unknown key, a value of the wrong type."""
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended to run from within Python")
    try:
        build_cli(["fit", "--config", str(path)], cli_class=ParseOnlyCLI)
    except (ArgumentError, ValueError, TypeError) as err:
        raise PreflightConfigError(f"{where}: {one_line(err)}{did_you_mean(str(err))}") from None


@dataclass
class FitResult:
    """What one fit left: its module (trained, or rebuilt from the checkpoint that had already reached the end), the
    step it ended at, and whether anything trained.

    Args:
        module: the module with the final weights.
        steps: the optimizer step the weights are at.
        trained: False when the checkpoint resumed had already reached ``max_steps``/``max_epochs``.
    """

    module: L.LightningModule
    steps: int
    trained: bool


def fit(args: list[str]) -> FitResult:
    """``preflight fit ARGS`` in this process (no ``fit`` in `args`): the command's fit, as `preflight iterate` runs
    each round's. A fit resumed (``--ckpt_path``) from a checkpoint that already reached its limit trains nothing and
    returns that checkpoint's module."""
    cli = build_cli(["fit", *args])
    if cli.nothing_to_train:
        from .export import module_from_checkpoint

        module, checkpoint = module_from_checkpoint(cli.config_init["fit"]["ckpt_path"])
        return FitResult(module, int(checkpoint.get("global_step") or 0), trained=False)
    return FitResult(cli.model, cli.trainer.global_step, trained=True)
