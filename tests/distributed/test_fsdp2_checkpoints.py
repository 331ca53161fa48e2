"""FSDP2 (ModelParallelStrategy) sharded checkpoints: save, resume, and `preflight export` consolidates them."""

import torch
from safetensors.torch import load_file

from preflight.cli import main
from tests.distributed.test_equivalence import run

COMMON = ["--batch-size", "4", "--pairs", "28", "--ckpt-every", "2"]


def test_sharded_checkpoint_resumes_and_exports(tmp_path):
    reference = run(tmp_path, "single", "--batch-size", "8", "--pairs", "28", "--steps", "6")
    root = str(tmp_path / "fsdp")
    run(tmp_path, "first", "--strategy", "fsdp2", "--devices", "2", *COMMON, "--steps", "4", "--root", root)
    checkpoint = tmp_path / "fsdp" / "ckpt" / "last.ckpt"
    assert checkpoint.is_dir() and (checkpoint / ".metadata").is_file()  # one shard per rank
    resumed = run(
        tmp_path,
        "resumed",
        "--strategy",
        "fsdp2",
        "--devices",
        "2",
        *COMMON,
        "--steps",
        "6",
        "--root",
        root,
        "--resume",
    )
    for x, y in zip(resumed["losses"], reference["losses"][4:]):
        assert abs(x - y) <= 1e-4
    main(["export", str(checkpoint), str(tmp_path / "hf")])
    exported = load_file(tmp_path / "hf" / "model.safetensors")
    for name, values in resumed["parameters"].items():
        got = exported[name].double().flatten()[: len(values)]
        assert torch.allclose(got, torch.tensor(values, dtype=torch.float64), atol=1e-6), name
