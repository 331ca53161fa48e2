"""A precomputed reference belongs to the data it was computed on, also across a resume."""

import json

import torch

from tests.conftest import ROOT
from tests.flows.conftest import QUICK

ROWS = [json.loads(line) for line in open(ROOT / "assets/data/train.jsonl")][:40]


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def swapped(rows):
    return [{**r, "chosen": r["rejected"], "rejected": r["chosen"]} for r in rows]


def table(ckpt):
    return torch.load(ckpt, weights_only=True)["preflight_reference_logps"]["train"]


def test_resuming_on_other_data_of_the_same_size_is_refused(preflight, workdir):
    a, b = write(workdir / "a.jsonl", ROWS), write(workdir / "b.jsonl", swapped(ROWS))
    common = ["fit", "--config", "configs/dpo.yaml", *QUICK, "--model.reference", "precomputed"]
    assert preflight(*common, "--data.train", a).code == 0
    ckpt = workdir / "runs/dpo/version_0/checkpoints/last.ckpt"
    before = table(ckpt)
    result = preflight(*common, "--data.train", b, "--trainer.max_steps", "4", "--ckpt_path", "last")
    assert result.code == 2
    assert result.preflight_lines()[-1] == (
        "preflight: error: reference: precomputed: the train reference log-probs in this checkpoint were computed on "
        "other train data, and the policy has trained since, so they cannot be recomputed: use the data the run "
        "started with, or start a new run"
    )
    assert table(ckpt) == before
    assert preflight(*common, "--data.train", a, "--trainer.max_steps", "4", "--ckpt_path", "last").code == 0


def test_a_lora_run_recomputes_the_reference_for_new_data(preflight, workdir, tmp_path):
    a, b = write(workdir / "a.jsonl", ROWS), write(workdir / "b.jsonl", swapped(ROWS))
    common = [
        "fit",
        "--config",
        "configs/dpo.yaml",
        *QUICK,
        "--model.reference",
        "precomputed",
        "--model.peft",
        "{r: 4, lora_alpha: 8}",
        "--model.learning_rate",
        "0.01",
    ]
    assert preflight(*common, "--data.train", a).code == 0
    on_a = table(workdir / "runs/dpo/version_0/checkpoints/last.ckpt")
    assert preflight(*common, "--data.train", b, "--trainer.max_steps", "4", "--ckpt_path", "last").code == 0
    resumed = table(workdir / "runs/dpo/version_0/checkpoints/last.ckpt")
    assert preflight(*common, "--data.train", b, "--trainer.default_root_dir", tmp_path / "fresh").code == 0
    fresh = table(tmp_path / "fresh/dpo/version_0/checkpoints/last.ckpt")
    assert resumed["data"] == fresh["data"]
    assert torch.allclose(torch.tensor(resumed["logps"]), torch.tensor(fresh["logps"]), atol=1e-5)
    # b swaps chosen and rejected: the reference values swap columns (same base model), so they were recomputed
    assert resumed["data"] != on_a["data"]
    assert torch.allclose(torch.tensor(resumed["logps"]), torch.tensor(on_a["logps"]).flip(1), atol=1e-5)
