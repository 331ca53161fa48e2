"""The package's rooms talk through public names: no file of `preflight` reads another's underscore names."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "preflight"
# Underscore names of other projects that are their documented way in (no public accessor exists):
THIRD_PARTY = {
    "_attn_implementation": "transformers: the attention implementation a config was loaded with",
    "_no_split_modules": "transformers: the decoder-layer classes, as accelerate and FSDP wrapping read them",
    "_fingerprint": "datasets: a Dataset's content hash, which keys the tokenization cache",
    "_run_subcommand": "Lightning: LightningCLI's hook that runs the subcommand, extended by PreflightCLI",
    "_exit": "os._exit: the way a distributed process leaves (preflight.process_exit)",
    "_run_exitfuncs": "atexit: exit handlers run before os._exit",
}


def room(parts: tuple[str, ...]) -> str:
    """The sub-package a module path is in (``modules``, ``cli``, ...), or the top-level module's own name."""
    return parts[0].removesuffix(".py") if parts else ""


def underscore_reads(relative: str, source: str) -> list[str]:
    """Where the file at `relative` (inside the package) reads an underscore name that is not its own object's."""
    parts = Path(relative).parts
    found = []
    for node in ast.walk(ast.parse(source)):
        name = None
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            owner = node.value
            mine = (isinstance(owner, ast.Name) and owner.id in ("self", "cls")) or (
                isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name) and owner.func.id == "super"
            )
            name = None if mine else node.attr
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and str(node.args[1].value).startswith("_")
            and not (isinstance(node.args[0], ast.Name) and node.args[0].id == "self")
        ):
            name = node.args[1].value
        elif isinstance(node, ast.ImportFrom) and node.level:
            package = parts[:-1][: len(parts) - node.level]  # the package the relative import starts from
            target = package + tuple((node.module or "").split("."))
            if room(target) != room(parts):
                found += [
                    f"{relative}:{node.lineno}: imports {a.name}"
                    for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")
                ]
        if name and name not in THIRD_PARTY:
            found.append(f"{relative}:{node.lineno}: reads {name}")
    return found


def test_no_file_reads_another_rooms_underscore_names():
    problems = [
        problem
        for path in sorted(PACKAGE.rglob("*.py"))
        for problem in underscore_reads(str(path.relative_to(PACKAGE)), path.read_text(encoding="utf-8"))
    ]
    assert problems == []


def test_the_check_finds_private_reads_and_imports():
    reach = (
        "from ..datamodules.sampler import _helper\ndef pairs(trainer):\n    return trainer.datamodule._train_sampler\n"
    )
    assert underscore_reads("modules/base.py", reach) == [
        "modules/base.py:1: imports _helper",
        "modules/base.py:3: reads _train_sampler",
    ]
    # a room's own underscore names, and its objects' own attributes, are its business
    inside = (
        "from .dpo import _check_beta\nclass A:\n    def f(self):\n        return self._x, getattr(self, '_y', 0)\n"
    )
    assert underscore_reads("losses/ipo.py", inside) == []


def test_what_the_documented_commands_write_in_a_checkout_is_ignored_by_git():
    """`preflight fit` writes runs/, `preflight experiment` experiments/, the README's exports out/: never staged."""
    import shutil
    import subprocess

    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    paths = ["runs/dpo/version_0/metrics.csv", "experiments/bandit/bandit.csv", "out/dpo-model/config.json"]
    ignored = subprocess.run(["git", "check-ignore", *paths], cwd=ROOT, capture_output=True, text=True)
    assert ignored.stdout.split() == paths


def test_the_callbacks_users_add_are_importable_from_preflight_callbacks():
    import lightning as L

    import preflight.callbacks as callbacks

    for name in ("GenerationEval", "HFExport", "MovingReference", "PrecomputedReference", "SaveOnInterrupt"):
        assert issubclass(getattr(callbacks, name), L.Callback), name
    from preflight.callbacks import SaveFinalWeights, ValidateFinalWeights  # what the command adds to every fit

    assert issubclass(SaveFinalWeights, L.Callback) and issubclass(ValidateFinalWeights, L.Callback)
    with pytest.raises(AttributeError):
        callbacks.FitSummary  # noqa: B018  the command's own, in preflight.reporting


def test_iterate_trains_through_preflight_train_not_the_command():
    """`preflight iterate` runs each round's fit through `preflight.train.fit`, as the command does, and imports
    nothing from the command's package."""
    import re

    for path in sorted((PACKAGE / "rounds").glob("*.py")):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"from \.\.cli\b|import preflight\.cli|from preflight\.cli", text), path.name
    assert "from ..train import fit" in (PACKAGE / "rounds" / "loop.py").read_text(encoding="utf-8")
