"""The fused lm_head under FSDP2: the chunked head runs inside the root's forward, where FSDP2 gathers the
head weight, and gives the single-process values and gradients (CPU, gloo, 2 processes)."""

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
        assert sharded[shared, "on"]["path"]["fused_lm_head"] and not sharded[shared, "off"]["path"]["fused_lm_head"]
        assert sharded[shared, "on"]["path"]["shared_prompt"] == (shared == "on")
        expected = single["off", "off"]  # one process, one row per sequence, full logits: the reference
        for name, run in [("sharded, fused", sharded[shared, "on"]), ("sharded, plain head", sharded[shared, "off"]),
                          ("one process, fused", single[shared, "on"])]:
            name = f"{name}, shared prompt {shared}"
            torch.testing.assert_close(run["logps"], expected["logps"], atol=1e-5, rtol=0, msg=name)
            assert run["grads"].keys() == expected["grads"].keys()
            for param, grad in run["grads"].items():
                reference = expected["grads"][param]
                error = (grad - reference).abs().max() / reference.abs().max().clamp(min=1e-12)
                assert error <= 1e-5, f"{name}: {param} gradient differs by {error:.2e} relative"
    head = "lm_head.weight" if "lm_head.weight" in expected["grads"] else "model.embed_tokens.weight"
    assert expected["grads"][head].abs().max() > 0  # the head's gradient is compared, and is not zero
