"""Every code block of the README, run in README order in one fresh folder, as a reader would.

A block preceded by ``<!-- readme-test: skip (reason) -->`` is not run (the reason says why);
``<!-- readme-test: file NAME -->`` saves the block as NAME, as the README tells the reader to.
To keep the suite short, each ``preflight fit`` command is run with ``SHORT`` appended (a few
steps), except in blocks marked ``<!-- readme-test: as written -->``, which run exactly as shown.
"""

import csv
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from preflight.cli import main
from tests.conftest import ROOT

SHORT = ["--trainer.max_steps", "3", "--trainer.limit_val_batches", "2", "--trainer.enable_progress_bar", "false"]
PREFLIGHT = str(Path(sys.executable).parent / "preflight")
FENCE = re.compile(r"(?:<!-- readme-test: (?P<mark>[^>]*?) -->\n)?```(?P<lang>\w*)\n(?P<body>.*?)```", re.S)


@dataclass
class Block:
    line: int
    lang: str
    mark: str
    body: str

    def __str__(self) -> str:
        return f"README.md:{self.line}:{self.lang}"


def readme_blocks() -> list[Block]:
    text = (ROOT / "README.md").read_text()
    return [
        Block(text[: m.start("lang")].count("\n") + 1, m["lang"], (m["mark"] or "").strip(), m["body"])
        for m in FENCE.finditer(text)
    ]


def commands(body: str) -> list[list[str]]:
    joined = re.sub(r"\\\n\s*", " ", body)
    return [
        shlex.split(line, comments=True) for line in joined.splitlines() if line.strip() and not line.startswith("#")
    ]


@pytest.fixture(scope="module")
def reader_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reader")
    (folder / "assets").symlink_to(ROOT / "assets")
    (folder / "configs").symlink_to(ROOT / "configs")
    return folder


def test_every_block_is_run_or_says_why_not():
    for block in readme_blocks():
        assert block.lang in ("bash", "python", "yaml", "toml", ""), block
        if block.mark.startswith("skip"):
            assert re.fullmatch(r"skip \(.+\)", block.mark), f"{block}: a skipped block says why"
        else:
            assert block.mark in ("", "as written") or block.mark.startswith("file "), block


@pytest.mark.parametrize("block", readme_blocks(), ids=str)
def test_readme_block(block, reader_folder, monkeypatch, capsys):
    if block.mark.startswith("file "):  # a file the reader saves (code, or data)
        (reader_folder / block.mark.split(" ", 1)[1]).write_text(block.body)
        return
    if block.mark.startswith("skip") or block.lang == "":
        pytest.skip(block.mark or "a layout listing, not code")
    monkeypatch.chdir(reader_folder)
    monkeypatch.setenv("PREFLIGHT_CACHE", str(reader_folder / ".cache"))
    if block.lang == "python":
        result = subprocess.run(
            [sys.executable, "-c", block.body], cwd=reader_folder, capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, result.stderr[-3000:]
        check_python_output(block, result.stdout)
    elif block.lang == "yaml":
        from preflight.losses import build_loss

        loss = build_loss(yaml.safe_load(block.body)["loss"])
        assert [(type(t).__name__, w) for t, w in zip(loss.losses, loss.weights)] == [
            ("DPOLoss", 0.8),
            ("BCOPairLoss", 0.2),
            ("SFTLoss", 1.0),
        ]
    else:
        for command in commands(block.body):
            assert command[0] == "preflight", f"{block}: {command}"
            args = command[1:] + (SHORT if command[1] == "fit" and block.mark != "as written" else [])
            code, out = run_preflight(args, reader_folder, capsys)
            assert code == 0, f"{block}: {shlex.join(command)}\n{out[-3000:]}"
            check_command_output(block, args, out, reader_folder)


def run_preflight(args, folder, capsys):
    """Several devices need their own processes (Lightning relaunches the command); the rest runs in this one."""
    if "--trainer.devices" in args:
        result = subprocess.run([PREFLIGHT, *args], cwd=folder, capture_output=True, text=True, timeout=600)
        return result.returncode, result.stdout + result.stderr
    capsys.readouterr()
    try:
        main(args)
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def check_python_output(block, out):
    if 'get_loss("dpo", beta=0.1)' in block.body:
        assert out.startswith("tensor(0.5981")  # −log σ(0.1 · ((−12 + 13) − (−15 + 14))) = −log σ(0.2)
    if "check_loss(" in block.body:
        assert out.startswith("check_loss('margin_dpo'): 7 checks passed")
    if "Policy.load(" in block.body:  # two decoded samples, then their two log-probs (negative: they are log-probs)
        import ast

        texts, logps = (ast.literal_eval(line) for line in out.strip().splitlines())
        assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
        (values,) = logps
        assert len(values) == 2 and all(v < 0 for v in values)


def check_command_output(block, args, out, folder):
    if args[0] == "fit" and "--ckpt_path" in args:  # resumes the block's previous fit, which reached max_steps 3
        assert "already reached max_steps=3 (step 3): nothing to train" in out and "fit finished" not in out
    elif args[0] == "fit":
        assert out.count("preflight: fit finished") == 1
    if args[0] == "fit" and "configs/lists.yaml" in args and "my_lists.jsonl" in args:
        assert "preflight: data: train my_lists.jsonl (2 lists), val: none" in out
    elif args[0] == "fit" and "configs/lists.yaml" in args:
        assert "train assets/data/lists_train.jsonl (500 lists), val assets/data/lists_val.jsonl (50 lists)" in out
        assert ("val/rewards/list_accuracies=" in out) == ("plackett_luce" in args)
    if args[0] == "fit" and "configs/kto.yaml" in args:  # the class balance, whichever file
        assert re.search(r"preflight: data: train \S+ \(\d+ unpaired: \d+ desirable, \d+ undesirable\)", out), out
    if args[0] == "fit" and "configs/tr_dpo.yaml" in args:
        assert "preflight: reference: moves towards the policy every 32 steps (soft, α=0.6; TR-DPO)" in out
    if args[0] == "iterate":  # one round of 8 prompts: its two lines, and metrics.csv
        rows = list(csv.DictReader(open(folder / "runs/iterative_dpo/metrics.csv")))
        assert [r["round"] for r in rows] == ["1"] and int(rows[0]["samples"]) == 8 * 4
        assert re.search(r"preflight: iterate: round 1/1: 32 samples, .*win rate against round 0 [\d.]+", out)
    if args[0] == "export":
        assert (folder / args[2] / "model.safetensors").is_file()
    if block.mark == "as written":  # the main job learns the shipped rule
        final = next(line for line in out.splitlines() if "final validation (step 150)" in line)
        assert float(re.search(r"val/rewards/accuracies=([\d.]+)", final).group(1)) >= 0.9
        version = max((folder / "runs" / "dpo").iterdir(), key=lambda p: p.stat().st_mtime)
        rows = list(csv.DictReader(open(version / "metrics.csv")))
        train_loss = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
        assert train_loss[-1] < 0.1 and train_loss[0] > 3 * train_loss[-1]
