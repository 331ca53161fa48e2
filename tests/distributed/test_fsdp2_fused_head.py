"""The fused lm_head under FSDP2: the chunked head runs as the forward of the lm_head's own unit (untied) or of
the root (tied), where FSDP2 gathers the head weight, and gives the single-process values and gradients (CPU,
gloo, 2 processes)."""

import subprocess
import sys
from pathlib import Path

import torch

SCRIPT = Path(__file__).with_name("fsdp2_logps.py")


def test_sharded_fused_head_equals_one_process(tmp_path):
    out = tmp_path / "out.pt"
    result = subprocess.run([sys.executable, str(SCRIPT), str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = torch.load(out)
    sharded, single = runs["sharded"], runs["single"]
    for shared in ("on", "off"):
        fused, plain = sharded[shared, "on", False], sharded[shared, "off", False]
        assert fused["path"]["fused_lm_head"] and not plain["path"]["fused_lm_head"]
        assert fused["path"]["shared_prompt"] == (shared == "on")
        assert fused["head_unit"] and plain["head_unit"]  # untied: the head is gathered by a unit of its own
        expected = single["off", "off", False]  # one process, one row per sequence, full logits: the reference
        for name, run in [
            ("sharded, fused", fused),
            ("sharded, plain head", plain),
            ("one process, fused", single[shared, "on", False]),
        ]:
            assert_same_logps_and_gradients(run, expected, f"{name}, shared prompt {shared}")
    assert expected["grads"]["lm_head.weight"].abs().max() > 0  # the head's gradient is compared, and is not zero

    tied, expected = sharded["on", "on", True], single["off", "off", True]
    assert tied["path"]["fused_lm_head"] and not tied["head_unit"]  # tied: the head stays in the root unit
    assert "lm_head.weight" not in tied["grads"] and expected["grads"]["model.embed_tokens.weight"].abs().max() > 0
    assert_same_logps_and_gradients(tied, expected, "sharded, fused, tied embeddings")


def assert_same_logps_and_gradients(run: dict, expected: dict, name: str) -> None:
    """Log-probs to 1e-5 absolute; every parameter's gradient to 1e-5 relative to its largest entry."""
    torch.testing.assert_close(run["logps"], expected["logps"], atol=1e-5, rtol=0, msg=name)
    assert run["grads"].keys() == expected["grads"].keys()
    for param, grad in run["grads"].items():
        reference = expected["grads"][param]
        error = (grad - reference).abs().max() / reference.abs().max().clamp(min=1e-12)
        assert error <= 1e-5, f"{name}: {param} gradient differs by {error:.2e} relative"
