"""Log-probs and gradients of one batch with the policy sharded by FSDP2 over 2 CPU processes (gloo).

    python tests/distributed/fsdp2_logps.py OUT.pt

Rank 0 writes, for the shared prompt and the fused head each on and off (and for tied embeddings, both on and
both off), the summed completion log-probs of every row, the full (gathered) gradient of their sum with respect to
every parameter, and whether the lm_head was an FSDP2 unit of its own.
"""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

from preflight import PreferenceModule  # noqa: E402
from preflight.modules.models import shard_fsdp2  # noqa: E402
from preflight.wrapped import is_fsdp2_unit  # noqa: E402
from preflight.process_exit import finish_distributed_process  # noqa: E402
from tests.helpers import batch_of, random_pairs, tiny_causal_lm  # noqa: E402


def logps_and_grads(sharded: bool) -> dict:
    results = {}
    runs = [(s, f, False) for s in ("on", "off") for f in ("on", "off")]
    runs += [("on", "on", True), ("off", "off", True)]  # tied embeddings: fused and shared, and the plain path
    for shared, fused, tied in runs:
        module = PreferenceModule(
            tiny_causal_lm(seed=3, tie_word_embeddings=tied),
            loss="dpo",
            fused_lm_head=fused,
            shared_prompt=shared,
            lm_head_chunk_size=7,
        )  # several chunks, the last partial
        module.configure_model()
        policy = module.policy
        if sharded:
            from torch.distributed.device_mesh import init_device_mesh

            policy = module.policy = shard_fsdp2(module.policy, init_device_mesh("cpu", (2,)))
        batch = batch_of(random_pairs(n=5, seed=11))
        logps = module.completion_logps(policy, batch)
        logps.sum().backward()
        grads = {
            name: (p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad).clone()
            for name, p in policy.named_parameters()
        }
        results[shared, fused, tied] = {
            "logps": logps.detach(),
            "grads": grads,
            "path": module.path_for(policy).as_dict(),
            "head_unit": is_fsdp2_unit(policy.get_output_embeddings()),
        }
    return results


def worker(rank: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ.get("PREFLIGHT_TEST_PORT", "29531"))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        results = logps_and_grads(sharded=True)
        if rank == 0:
            torch.save({"sharded": results, "single": logps_and_grads(sharded=False)}, out)
    except BaseException:
        dist.destroy_process_group()
        raise
    # FSDP2 keeps gloo's threads alive past destroy_process_group: leave without the interpreter's teardown, which
    # aborted this worker now and then (terminate called without an active exception)
    finish_distributed_process()


if __name__ == "__main__":
    mp.spawn(worker, args=(sys.argv[1],), nprocs=2)
