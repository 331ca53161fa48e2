"""`preflight export CKPT_OR_RUN OUT`: a checkpoint as a Hugging Face model folder."""

from __future__ import annotations

import argparse

from ..runs import resolve_checkpoint
from .command import ArgparseCommand
from ..user_imports import import_user_modules


class ExportCommand(ArgparseCommand):
    name = "export"
    summary = "write a Hugging Face folder:     preflight export runs/dpo out/dpo-model"
    description = "Write a checkpoint as a Hugging Face model folder."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "checkpoint", help="a .ckpt written by preflight fit, or a run folder (its newest last.ckpt)"
        )
        parser.add_argument(
            "out", help="the folder to write: new, empty, or an earlier export of preflight's (replaced atomically)"
        )
        parser.add_argument(
            "--no-merge-lora", dest="merge_lora", action="store_false", help="save the LoRA adapter alone"
        )
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

    def execute(self, ns: argparse.Namespace) -> None:
        from ..export import export_checkpoint

        import_user_modules(ns.imports)
        path = resolve_checkpoint(ns.checkpoint)
        out, step = export_checkpoint(
            path, ns.out, merge_lora=ns.merge_lora, tokenizer=ns.tokenizer, trust_remote_code=ns.trust_remote_code
        )
        print(f"preflight: exported {path} (step {step}) to {out}")
