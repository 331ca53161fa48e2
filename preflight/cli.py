"""The `preflight` command: a LightningCLI over preflight's modules and `PreferenceDataModule`.

    preflight fit --config configs/dpo.yaml [--model.loss ipo] [--trainer.max_steps 100]
    preflight validate|test --config ... --ckpt_path last
    preflight export CKPT OUT [--no-merge-lora] [--tokenizer PATH]

Configs may use OmegaConf interpolation (``${model.init_args.model}``). Loss plugins
registered through the ``preflight.losses`` entry points are loaded before parsing.
Bad configuration ends with one line on stderr and exit status 2 (set
``PREFLIGHT_DEBUG=1`` for the traceback).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any

import lightning as L
from jsonargparse import ArgumentError
from lightning.pytorch.cli import LightningCLI

from .checkpointing import AtomicCheckpointIO
from .datamodules import PreferenceDataModule
from .losses.registry import load_entry_points
from .modules import NonFiniteError, PreflightModule

SUBCOMMANDS = ("fit", "validate", "test")
EXIT_CONFIG_ERROR = 2


class FitSummary(L.Callback):
    """After `fit`: the final validation metrics and where checkpoints and logs went."""

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        log_dir = trainer.log_dir if trainer.logger is not None else None  # a collective: every rank asks
        if not trainer.is_global_zero:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        lines = ["", "preflight: fit finished"]
        if metrics:
            lines.append("  final validation: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())))
        checkpoint = trainer.checkpoint_callback
        if checkpoint is not None and getattr(checkpoint, "dirpath", None):
            lines.append(f"  checkpoints: {checkpoint.dirpath}")
        if log_dir:
            lines.append(f"  logs: {log_dir}")
        print("\n".join(lines), flush=True)


class PreflightCLI(LightningCLI):
    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {name: spec for name, spec in LightningCLI.subcommands().items() if name in SUBCOMMANDS}

    def add_arguments_to_parser(self, parser) -> None:
        from jsonargparse import lazy_instance

        from .modules import PreferenceModule

        parser.set_defaults({"model": lazy_instance(PreferenceModule)})

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        # Read and check the data before the trainer exists, so bad data leaves no run folder behind.
        if self.subcommand in SUBCOMMANDS and isinstance(self.datamodule, PreferenceDataModule):
            self.datamodule.setup(self.subcommand)
        if self._get(self.config_init, "trainer", default={}).get("plugins") is None:
            kwargs.setdefault("plugins", [AtomicCheckpointIO()])
        return super().instantiate_trainer(**kwargs)


def build_cli(args: list[str] | None = None, run: bool = True, cli_class: type[PreflightCLI] = PreflightCLI) -> PreflightCLI:
    """The CLI; with ``run=False`` it parses and instantiates without a subcommand (no ``fit`` in `args`)."""
    load_entry_points()
    parser_kwargs: dict[str, Any] = {"parser_mode": "omegaconf", "exit_on_error": False}
    return cli_class(
        PreflightModule,
        PreferenceDataModule,
        subclass_mode_model=True,
        auto_configure_optimizers=False,
        trainer_defaults={"callbacks": [FitSummary()]},
        save_config_kwargs={"overwrite": True},
        parser_kwargs={**parser_kwargs, **{name: dict(parser_kwargs) for name in SUBCOMMANDS}},
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
        err = err.__cause__ or err.__context__
    useful = [e for e in chain if isinstance(e, (ValueError, OSError, NonFiniteError)) and "Union subtypes" not in str(e)]
    text = re.sub(r"\s+", " ", str(useful[-1] if useful else chain[0])).strip()
    nested = re.search(r"Errors: - (.*?) - Expected a <class 'NoneType'>", text)
    if nested:
        key = re.match(r'Parser key "([^"]+)"', text)
        text = (f"{key.group(1)}: " if key else "") + nested.group(1).replace("Problem with given class_path ", "")
    return text or type(chain[0]).__name__


def export_main(argv: list[str]) -> None:
    from .export import export_checkpoint

    parser = argparse.ArgumentParser(prog="preflight export", description="Write a checkpoint as a Hugging Face model folder.")
    parser.add_argument("checkpoint", help="a .ckpt written by preflight fit")
    parser.add_argument("out", help="the folder to write (replaced if it exists)")
    parser.add_argument("--no-merge-lora", dest="merge_lora", action="store_false", help="save the LoRA adapter alone")
    parser.add_argument("--tokenizer", help="tokenizer to save with it (default: the one the data module used)")
    ns = parser.parse_args(argv)
    if not Path(ns.checkpoint).exists():
        raise ValueError(f"{ns.checkpoint}: checkpoint not found")
    out = export_checkpoint(ns.checkpoint, ns.out, merge_lora=ns.merge_lora, tokenizer=ns.tokenizer)
    print(f"preflight: exported {ns.checkpoint} to {out}")


def main(argv: list[str] | None = None) -> None:
    explicit = argv is not None
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv[:1] == ["export"]:
            export_main(argv[1:])
        else:
            build_cli(argv if explicit else None)
    except (ValueError, OSError, NonFiniteError, ArgumentError, argparse.ArgumentError) as err:
        if os.environ.get("PREFLIGHT_DEBUG"):
            raise
        print(f"preflight: error: {one_line(err)}", file=sys.stderr)
        sys.exit(EXIT_CONFIG_ERROR)


if __name__ == "__main__":
    main()
