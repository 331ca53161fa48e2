"""The `preflight` command: overrides, interpolation, plugins, and one-line errors with exit status 2."""

import subprocess
import sys

import pytest

from preflight.cli import build_cli, main
from tests.conftest import ROOT

DPO = str(ROOT / "configs" / "dpo.yaml")


@pytest.fixture(autouse=True)
def in_repo(monkeypatch):
    monkeypatch.chdir(ROOT)


def parsed(*overrides):
    return build_cli(["--config", DPO, *overrides], run=False)


def test_documented_overrides_apply():
    cli = parsed(
        "--model.loss",
        "ipo",
        "--data.train",
        "assets/data/val.jsonl",
        "--data.batch_size",
        "4",
        "--trainer.max_steps",
        "7",
    )
    assert cli.model.loss_fn.name == "ipo"
    assert cli.datamodule.train_spec == "assets/data/val.jsonl" and cli.datamodule.batch_size == 4
    assert cli.trainer.max_steps == 7
    cli = parsed("--trainer.devices", "2", "--trainer.strategy", "ddp", "--trainer.accelerator", "cpu")
    assert type(cli.trainer.strategy).__name__ == "DDPStrategy" and cli.trainer.num_devices == 2


def test_loss_mapping_on_the_command_line():
    cli = parsed("--model.loss", "{name: robust, label_smoothing: 0.2}")
    assert cli.model.loss_fn.name == "robust" and cli.model.loss_fn.label_smoothing == 0.2


def test_omegaconf_interpolation_resolves(tmp_path):
    config = tmp_path / "interpolated.yaml"
    config.write_text(
        "model:\n  class_path: preflight.PreferenceModule\n  init_args:\n    model: assets/tiny-llama\n"
        "    loss: {name: ipo, beta: 0.5}\n"
        "data:\n  tokenizer: assets/tokenizer\n  train: assets/data/val.jsonl\n"
        "trainer:\n  default_root_dir: ${oc.env:PREFLIGHT_TEST_ROOT,runs}/by-${model.init_args.loss.name}\n"
    )
    cli = parsed("--config", str(config))
    assert cli.trainer.default_root_dir == "runs/by-ipo"
    assert cli.datamodule.train_spec == "assets/data/val.jsonl" and cli.model.loss_fn.beta == 0.5


def test_entry_point_losses_work_by_name_in_the_cli(monkeypatch, tmp_path):
    from importlib.metadata import EntryPoint

    import preflight.losses.registry as registry

    (tmp_path / "cli_plugin.py").write_text(
        "import torch.nn.functional as F\n"
        "from preflight.losses import PreferenceLoss, LossOutput, register_loss\n"
        "@register_loss('from_plugin')\n"
        "class FromPlugin(PreferenceLoss):\n"
        "    requires_reference = False\n"
        "    def compute(self, inputs):\n"
        "        losses = -F.logsigmoid(inputs.policy_chosen_logps - inputs.policy_rejected_logps)\n"
        "        return LossOutput(losses.mean(), losses)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(
        registry,
        "entry_points",
        lambda group: [EntryPoint("p", "cli_plugin", group)] if group == registry.ENTRY_POINT_GROUP else [],
    )
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    cli = parsed("--model.loss", "from_plugin")
    assert cli.model.loss_fn.name == "from_plugin" and cli.model.reference_mode == "none"


@pytest.mark.parametrize(
    "override, message",
    [
        (["--model.loss", "dpoo"], "preflight: error: unknown loss 'dpoo'. Did you mean 'dpo'?"),
        (
            ["--model.loss", "{name: dpo, bta: 1}"],
            "preflight: error: loss 'dpo' has no hyperparameter 'bta'. Did you mean 'beta'?",
        ),
        (["--model.model", "./no-such-model"], "preflight: error: model './no-such-model': no such folder"),
        (["--data.train", "missing.jsonl"], "preflight: error: missing.jsonl: file not found"),
    ],
)
def test_bad_configuration_is_one_line_and_exit_2(override, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", DPO, "--trainer.default_root_dir", str(tmp_path / "run"), *override])
    assert exit_info.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("preflight:")]
    assert len(err) == 1 and err[0].startswith(message)
    assert not (tmp_path / "run").exists()  # nothing half-written


def test_bad_data_row_reaches_the_user_as_its_location(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "Hi", "chosen": " yes", "rejected": " no"}\n{"prompt": "Hi", "chosen": " yes"}\n')
    with pytest.raises(SystemExit):
        main(["fit", "--config", DPO, "--data.train", str(bad)])
    assert f"preflight: error: {bad}, line 2: missing field 'rejected'" in capsys.readouterr().err


def test_console_script_and_module_entry_point(monkeypatch, capsys):
    import runpy
    from pathlib import Path

    script = Path(sys.executable).parent / "preflight"  # installed next to the interpreter
    result = subprocess.run([str(script), "fit", "--help"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr[-500:]
    assert "--model" in result.stdout and "--data.train" in result.stdout
    # `python -m preflight`: the package's __main__, run as the interpreter runs it (in this process, which has
    # already paid for the imports a second interpreter would repeat)
    monkeypatch.setattr(sys, "argv", ["python -m preflight", "fit", "--help"])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_module("preflight", run_name="__main__", alter_sys=True)
    assert exit_.value.code in (0, None)
    out = capsys.readouterr().out
    assert "--model" in out and "--data.train" in out


def test_the_command_writes_checkpoints_atomically():
    """Resuming through the command is tested from a killed run in tests/flows/test_run_folders.py."""
    from preflight.checkpointing import AtomicCheckpointIO

    assert isinstance(parsed().trainer.strategy.checkpoint_io, AtomicCheckpointIO)


def test_the_installed_distribution_is_preflight_lightning_and_version_says_so(capsys):
    """`pip install preflight` gets another project: ours installs as preflight-lightning, with the `preflight`
    command and package; `preflight --version` names the installed version, the one `preflight.__version__` holds."""
    from importlib.metadata import distribution

    import preflight

    ours = distribution("preflight-lightning")
    assert ours.metadata["Name"] == "preflight-lightning"
    assert ours.version == preflight.__version__
    assert [e.value for e in ours.entry_points if e.name == "preflight"] == ["preflight.cli:main"]
    main(["--version"])
    assert capsys.readouterr().out.strip() == (
        f"preflight {preflight.__version__} (distribution preflight-lightning: pip install preflight-lightning)"
    )


LEAVE = """
import atexit, sys
from pathlib import Path
from preflight.process_exit import leave_process
atexit.register(lambda: Path(sys.argv[1]).write_text("exit handlers ran"))
print("unflushed output", end="")  # a pipe is block-buffered: lost unless flushed before os._exit
leave_process(3)
print("never reached")
"""


def test_a_distributed_process_leaves_with_its_status_after_its_exit_handlers_and_output(tmp_path):
    """How a process that ran a distributed fit ends: exit handlers (temporary stores, logging) first, its output
    flushed, then `os._exit` with the status, so no interpreter teardown runs beside gloo's threads."""
    marker = tmp_path / "marker"
    result = subprocess.run([sys.executable, "-c", LEAVE, str(marker)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 3, result.stderr[-2000:]
    assert result.stdout == "unflushed output"
    assert marker.read_text() == "exit handlers ran"
