"""What a user finds by asking the command: help, the loss list, and output about the run only."""

import inspect
import re

import pytest

from preflight import PreferenceDataModule, PreferenceModule, RewardModule
from preflight.evaluation import GenerationEval
from preflight.research.bandit import BanditSettings
from preflight.research.frontier import FrontierSettings
from preflight.research.known_reward import KnownRewardTask
from preflight.losses import available_losses, loss_class
from tests.flows.conftest import QUICK


def test_top_level_help_names_preflight_and_every_command(preflight):
    result = preflight("--help")
    assert result.code == 0
    assert "preflight" in result.out.splitlines()[0] and "Lightning Trainer command line tool" not in result.out
    for command in ("fit", "validate", "test", "export", "losses", "plot", "experiment"):
        assert re.search(rf"^  {command} ", result.out, re.M), command


def test_losses_lists_every_registered_loss(preflight):
    result = preflight("losses")
    assert result.code == 0
    blocks = result.out.strip().split("\n")
    heads = [line for line in blocks if not line.startswith(" ")]
    classes = {id(loss_class(n)): loss_class(n) for n in available_losses()}
    assert len(heads) == len(classes)
    dpo = blocks[blocks.index(next(h for h in heads if h.startswith("dpo ")))]
    assert dpo == "dpo (aliases: sigmoid)"
    details = blocks[blocks.index(dpo) + 1 : blocks.index(dpo) + 3]
    assert details[0].strip() == "beta=0.1, label_smoothing=0.0, divergence='reverse_kl', alpha=0.5"
    assert details[1].strip().startswith("takes pairs; needs a reference; arXiv:2305.18290")
    simpo = blocks[blocks.index(next(h for h in heads if h.startswith("simpo"))) + 2]
    assert simpo.strip().startswith("takes pairs; reference-free; arXiv:2405.14734")
    for name, paper in (("plackett_luce", "2305.18290"), ("lipo_lambda", "2402.01878"), ("infonca", "2402.05369")):
        entry = blocks[blocks.index(next(h for h in heads if h.split()[0] == name)) + 2]
        assert entry.strip().startswith(f"takes lists; needs a reference; arXiv:{paper}"), entry
    for name, paper in (("kto", "2402.01306"), ("bco", "2404.04656"), ("apo_zero_unpaired", "2408.06266")):
        entry = blocks[blocks.index(next(h for h in heads if h.split()[0] == name)) + 2]
        expected = f"takes unpaired completions (prompt, completion, label); needs a reference; arXiv:{paper}"
        assert entry.strip().startswith(expected), entry


def documented_args(cls) -> set[str]:
    doc = inspect.getdoc(cls) or ""
    args = doc.split("Args:", 1)[1] if "Args:" in doc else ""
    found = set()
    for line in args.splitlines():
        match = re.match(r"^    ([\w, ]+):", line)
        if match:
            found |= {name.strip() for name in match.group(1).split(",")}
    return found


@pytest.mark.parametrize(
    "cls",
    [
        PreferenceModule,
        RewardModule,
        PreferenceDataModule,
        GenerationEval,
        BanditSettings,
        FrontierSettings,
        KnownRewardTask,
    ],
    ids=lambda c: c.__name__,
)
def test_every_option_has_an_args_entry(cls):
    parameters = set(inspect.signature(cls.__init__).parameters) - {"self"}
    assert parameters - documented_args(cls) == set()


def test_fit_help_documents_the_options(preflight):
    result = preflight("fit", "--help")
    assert result.code == 0
    text = re.sub(r"\s+", " ", result.out)
    assert "--data.max_prompt_length" in text and "prompt tokens per row at most" in text
    assert "--imports" in text and "--run_name" in text


def test_the_command_output_is_about_the_run(preflight):
    result = preflight("fit", "--config", "configs/dpo.yaml", *QUICK)
    assert result.code == 0
    everything = result.out + result.err
    assert "Tip" not in everything and "litlogger" not in everything
    assert "deprecated" not in everything.lower()


def test_every_loss_hyperparameter_is_documented_and_shown_with_its_default(preflight):
    """Each hyper-parameter of each registered loss has an ``Args:`` entry (LightningCLI's --help and `preflight
    losses` show it), and `preflight losses` prints it under the loss."""
    import inspect

    from preflight.losses.catalog import documented_arguments
    from preflight.losses.registry import loss_hyperparameters

    classes = {id(loss_class(n)): loss_class(n) for n in available_losses()}.values()
    missing = [
        f"{cls.__name__}.{name}"
        for cls in classes
        for name, p in loss_hyperparameters(cls).items()
        if p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
        and name not in documented_arguments(cls)
    ]
    assert missing == []
    lines = preflight("losses").out.splitlines()
    at = lines.index("dpo (aliases: sigmoid)")
    assert lines[at + 3] == (
        "      beta (float): the KL strength β of the implicit reward β·log(π_θ/π_ref), typically 0.1 to 0.5. "
        "Default 0.1; range (0, ∞)."
    )
    assert lines[at + 6].startswith("      alpha (float): α of ``alpha_divergence``")
