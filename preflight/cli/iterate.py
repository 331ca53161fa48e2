"""`preflight iterate --config configs/iterative_dpo.yaml`: rounds of sample → score → pair → train
(`preflight.rounds`), its YAML the fields of `IterateSettings`; run again, it resumes where it stopped."""

from __future__ import annotations

import dataclasses

from ..losses.registry import load_entry_points
from .command import Command
from .lightning import with_shipped_configs


class IterateCommand(Command):
    name = "iterate"
    summary = "iterative DPO on own samples:    preflight iterate --config configs/iterative_dpo.yaml"

    def parser(self):
        from jsonargparse import ActionConfigFile, ArgumentParser

        from ..rounds import IterateSettings

        parser = ArgumentParser(
            prog="preflight iterate",
            description="Rounds of sample, score, pair and train on the policy's own samples; run again to resume.",
            parser_mode="omegaconf",
            exit_on_error=False,
        )
        parser.add_argument("--config", action=ActionConfigFile, help="a YAML file of the settings below")
        parser.add_class_arguments(IterateSettings, as_group=False)
        return parser

    def run(self, argv: list[str]) -> None:
        from ..rounds import IterateSettings, run_rounds

        parsed = self.parser().parse_args(with_shipped_configs(argv)).as_dict()
        names = [f.name for f in dataclasses.fields(IterateSettings)]
        settings = IterateSettings(**{name: parsed[name] for name in names})
        load_entry_points()
        run_rounds(settings)
