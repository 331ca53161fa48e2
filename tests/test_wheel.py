"""The built wheel works outside the checkout: installed in a fresh virtual environment and run from an empty folder,
it has the tiny model, tokenizer, data and configs it ships, and `preflight cp` copies a config to edit."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHIPPED = (
    "configs/dpo.yaml",
    "assets/tiny-llama/config.json",
    "assets/tiny-writer/model.safetensors",
    "assets/tokenizer/tokenizer.json",
)


def run(args, cwd, env, timeout=600):
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{args} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv python, preflight script, env): the wheel built from this checkout, installed alone in a new venv whose
    other packages (torch, lightning, ...) are this environment's, reached through a .pth file."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "preflight", source / "preflight", ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", PREFLIGHT_CACHE=str(base / "c"))
    pip = [sys.executable, "-m", "pip"]
    run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(base / "dist"), str(source)], base, env)
    wheel = next((base / "dist").glob("preflight_lightning-*.whl"))
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    run([*pip, "--python", str(python), "install", "--no-deps", "-q", str(wheel)], base, env)
    purelib = Path(
        run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], base, env).stdout.strip()
    )
    (purelib / "outer-environment.pth").write_text(sysconfig.get_path("purelib") + "\n")  # after the venv's own
    return python, venv / "bin" / "preflight", env, wheel


def test_the_wheel_ships_the_assets_and_configs(installed):
    *_, wheel = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in SHIPPED + ("assets/data/train.jsonl", "assets/chat_templates/chatml.jinja", "py.typed"):
        assert f"preflight/{path}" in names, path


def test_the_installed_wheel_trains_from_an_empty_folder(installed, tmp_path):
    python, preflight, env, _ = installed
    work = tmp_path / "work"
    work.mkdir()
    where = run([str(python), "-c", "import preflight; print(preflight.__file__)"], work, env).stdout.strip()
    assert Path(where).is_relative_to(python.parents[1]), where  # the wheel's package, not the checkout's

    copied = run([str(preflight), "cp", "dpo", "my_dpo.yaml"], work, env)
    assert copied.stdout.strip().startswith("preflight: copied configs/dpo.yaml to my_dpo.yaml")
    assert (work / "my_dpo.yaml").read_text() == (REPO / "preflight/configs/dpo.yaml").read_text()
    again = subprocess.run(
        [str(preflight), "cp", "dpo", "my_dpo.yaml"], cwd=work, env=env, capture_output=True, text=True
    )
    assert again.returncode == 2 and again.stderr.strip() == (
        "preflight: error: cp: my_dpo.yaml exists: remove it first or choose another name"
    )

    fit = run(
        [
            str(preflight),
            "fit",
            "--config",
            "my_dpo.yaml",
            "--trainer.max_steps",
            "3",
            "--trainer.val_check_interval",
            "3",
        ],
        work,
        env,
    )
    assert "preflight: data: train assets/data/train.jsonl (" in fit.stdout
    metrics = (work / "runs/my_dpo/version_0/metrics.csv").read_text().splitlines()  # named for its config
    header = metrics[0].split(",")
    steps = [row.split(",")[header.index("step")] for row in metrics[1:]]
    assert steps[0] == "0" and "3" in steps and "val/loss" in header  # the baseline, the third step, its validation
    assert sorted(p.name for p in work.iterdir()) == ["my_dpo.yaml", "runs"]  # no assets/ copied beside it

    # the config by its shipped path, as the README writes it, from a folder that has no configs/
    validate = run(
        [str(preflight), "validate", "--config", "configs/dpo.yaml", "--trainer.limit_val_batches", "1"], work, env
    )
    assert validate.stdout.splitlines()[0] == (
        "preflight: config configs/dpo.yaml: the one shipped with preflight (preflight cp dpo . to edit a copy)"
    )
    # the module's defaults and the known-reward task (README: preflight experiment frontier) find the shipped files
    check = (
        "from preflight import PreferenceModule; from preflight.research.known_reward import KnownRewardTask; "
        "import json, pathlib; m = PreferenceModule(); m.configure_model(); "
        "task = KnownRewardTask(base_epochs=0, train_pairs=2, val_pairs=2, max_new_tokens=3); "
        "task = task.build(pathlib.Path('task')); "
        "print(json.dumps([type(m.policy).__name__, task['train_pairs'], task['val_pairs']]))"
    )
    out = run([str(python), "-c", check], work, env).stdout.strip().splitlines()[-1]
    assert json.loads(out) == ["LlamaForCausalLM", 2, 2]
