"""Killed with SIGKILL between checkpoints, `--ckpt_path last` continues as if nothing happened."""

import subprocess
import sys

import pytest
import torch

from preflight.checkpointing import AtomicCheckpointIO
from tests.distributed.test_equivalence import run

ARGS = ["--batch-size", "8", "--steps", "8", "--pairs", "28", "--ckpt-every", "3"]


@pytest.mark.parametrize("peft, moving", [(False, None), (True, None), (False, "soft")], ids=["full", "lora", "tr_dpo"])
def test_kill_and_resume_reproduces_the_uninterrupted_run(tmp_path, peft, moving):
    """With a moving reference (TR-DPO, every 2 steps), the checkpoint of step 3 holds the reference of step 2's
    update, and the resumed run makes the updates of steps 4, 6 and 8 as the uninterrupted run did."""
    extra = (["--peft"] if peft else []) + (["--moving-reference", moving] if moving else [])
    whole = run(tmp_path, "whole", *ARGS, *extra, "--root", str(tmp_path / "whole"))
    killed = run(tmp_path, "killed", *ARGS, *extra, "--root", str(tmp_path / "run"), "--kill-at", "5", check=False)
    assert killed.returncode == -9  # SIGKILL at step 5: the last checkpoint is from step 3, mid-epoch
    state = torch.load(tmp_path / "run" / "ckpt" / "last.ckpt", weights_only=True)
    assert state["global_step"] == 3
    if peft:
        assert all("lora_" in k for k in state["state_dict"])  # only what is trainable
    if moving:
        assert any(k.startswith("reference_model.") for k in state["state_dict"])  # the moved reference is state
        assert state["callbacks"]["MovingReference"] == {"last_update": 2, "updates": 1}
    resumed = run(tmp_path, "resumed", *ARGS, *extra, "--root", str(tmp_path / "run"), "--resume")
    assert resumed["global_step"] == whole["global_step"] == 8
    assert len(resumed["losses"]) == 5  # steps 4..8
    for x, y in zip(resumed["losses"], whole["losses"][3:]):
        assert abs(x - y) <= 1e-6
    for name in whole["parameters"]:
        assert max(abs(x - y) for x, y in zip(whole["parameters"][name], resumed["parameters"][name])) <= 1e-6


KILL_MID_SAVE = """
import os, signal, sys, torch
from preflight.checkpointing import AtomicCheckpointIO
real_save = torch.save
def dying_save(obj, f, *a, **k):
    f.write(b"half a checkpoint")  # some bytes reach the file, then the process is killed
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)
torch.save = dying_save
AtomicCheckpointIO().save_checkpoint({"step": 2, "w": torch.ones(3)}, sys.argv[1])
"""


def test_a_kill_during_a_save_leaves_the_previous_checkpoint_loadable(tmp_path):
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": 1, "w": torch.zeros(3)}, path)
    result = subprocess.run([sys.executable, "-c", KILL_MID_SAVE, str(path)], capture_output=True, timeout=120)
    assert result.returncode == -9
    loaded = AtomicCheckpointIO().load_checkpoint(path, weights_only=True)
    assert loaded["step"] == 1 and torch.equal(loaded["w"], torch.zeros(3))
    # the half-written bytes went to a temporary file beside it, never to last.ckpt
    assert any(p.name.startswith(".last.ckpt.") for p in tmp_path.iterdir())
