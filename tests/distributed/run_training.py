"""One training run for the distribution and resume tests; rank 0 writes what it saw as JSON.

    python tests/distributed/run_training.py OUT.json --strategy ddp --devices 2 --batch-size 4 --steps 6

Lightning's DDP launcher starts the other ranks by running this same command again.
"""

import argparse
import json
import os
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import lightning as L  # noqa: E402
import torch  # noqa: E402
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402

from preflight import PreferenceDataModule, PreferenceModule  # noqa: E402
from preflight.process_exit import finish_distributed_process  # noqa: E402
from preflight.checkpointing import AtomicCheckpointIO  # noqa: E402
from preflight.reference import PrecomputedReference  # noqa: E402


class Record(L.Callback):
    """The train loss of every optimizer step: the mean over all its pairs (all micro-batches, all ranks).

    The schedule is constant after warm-up, so a run may stop at any max_steps and another
    resume it to a later one on the same schedule.
    """

    def __init__(self, kill_at: int | None) -> None:
        self.sums: dict[int, list[float]] = {}
        self.kill_at = kill_at
        self._last_step = 0

    def on_train_start(self, trainer, pl_module):
        self._last_step = trainer.global_step  # 0, or the step a resumed run starts from

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        total = trainer.strategy.reduce(outputs["pair_loss_sum"].clone(), reduce_op="sum")
        pairs = trainer.strategy.reduce(torch.tensor(float(outputs["pairs"])), reduce_op="sum")
        # a micro-batch that did not step the optimizer belongs to the next step
        step = trainer.global_step if trainer.global_step > self._last_step else trainer.global_step + 1
        self._last_step = trainer.global_step
        entry = self.sums.setdefault(step, [0.0, 0.0])
        entry[0] += float(total)
        entry[1] += float(pairs)
        if self.kill_at is not None and trainer.global_step == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no final checkpoint: as a real kill

    @property
    def losses(self) -> list[float]:
        return [total / pairs for _, (total, pairs) in sorted(self.sums.items())]


def full_parameters(module) -> dict[str, list[float]]:
    out = {}
    for name, p in module.policy.named_parameters():
        t = p.full_tensor() if hasattr(p, "full_tensor") else p
        out[name.replace("_fsdp_wrapped_module.", "").replace("module.", "")] = (
            t.detach().double().flatten()[:64].tolist()
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--strategy", default="auto", choices=["auto", "ddp", "fsdp2"])
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--accumulate", type=int, default=1)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--root", default=None)
    parser.add_argument("--ckpt-every", type=int, default=None)
    parser.add_argument("--kill-at", type=int, default=None)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--peft", action="store_true")
    parser.add_argument("--reference", default="auto", help="the module's reference setting")
    parser.add_argument("--pairs", type=int, default=96)
    parser.add_argument("--generate", type=int, default=0, help="GenerationEval on this many val prompts")
    parser.add_argument("--lists", action="store_true", help="the shipped lists (3–4 completions), all their pairs")
    parser.add_argument("--moving-reference", default=None, choices=["soft", "hard"], help="TR-DPO every 2 steps")
    args = parser.parse_args()

    L.seed_everything(0, verbose=False)
    source = "lists_val.jsonl" if args.lists else "val.jsonl"
    rows = [json.loads(line) for line in open(ROOT / "assets" / "data" / source)][: args.pairs]
    data = PreferenceDataModule(
        str(ROOT / "assets" / "tokenizer"),
        train=rows,
        batch_size=args.batch_size,
        seed=0,
        use_cache=False,
        val=rows[:8] if args.generate else None,
        pairs_from_lists="all",
    )
    module = PreferenceModule(
        str(ROOT / "assets" / "tiny-llama"),
        loss="dpo",
        learning_rate=3e-3,
        scheduler="constant",
        warmup_steps=2,
        peft={"r": 4, "lora_alpha": 8} if args.peft else None,
        reference=args.reference,
        precompute_batch_size=4,
    )
    strategy = args.strategy
    if strategy == "fsdp2":
        from lightning.pytorch.strategies import ModelParallelStrategy

        strategy = ModelParallelStrategy(data_parallel_size=args.devices, tensor_parallel_size=1)
    record = Record(args.kill_at)
    callbacks = [record]
    if args.moving_reference:
        from preflight.moving_reference import MovingReference

        callbacks.append(MovingReference(args.moving_reference, alpha=0.5, every_n_steps=2))
    if args.generate:
        from preflight.evaluation import GenerationEval

        generation = GenerationEval(reward="preflight.rewards:politeness", num_prompts=args.generate, max_new_tokens=6)
        callbacks.append(generation)
    if args.ckpt_every:
        callbacks.append(
            ModelCheckpoint(
                dirpath=Path(args.root) / "ckpt", save_last=True, every_n_train_steps=args.ckpt_every, save_top_k=0
            )
        )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=args.devices,
        strategy=strategy,
        max_steps=args.steps,
        accumulate_grad_batches=args.accumulate,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=bool(args.ckpt_every),
        callbacks=callbacks,
        num_sanity_val_steps=0,
        **(
            dict(limit_val_batches=1, val_check_interval=args.steps, check_val_every_n_epoch=None)
            if args.generate
            else {}
        ),
        default_root_dir=args.root,
        plugins=[AtomicCheckpointIO()] if args.strategy != "fsdp2" else None,
    )
    trainer.fit(module, data, ckpt_path="last" if args.resume else None)
    parameters = full_parameters(module)
    precompute = next((c for c in trainer.callbacks if isinstance(c, PrecomputedReference)), None)
    if trainer.is_global_zero:
        Path(args.out).write_text(
            json.dumps(
                {
                    "losses": record.losses,
                    "parameters": parameters,
                    "global_step": trainer.global_step,
                    "logps_path": module.hparams["logps_path"],
                    "generations": generation.last_rows if args.generate else None,
                    "reference_rows_computed": precompute.rows_computed if precompute else None,
                    "reference_table": module.precomputed_reference.get("train", {}).get("logps"),
                }
            )
        )


if __name__ == "__main__":
    main()
    finish_distributed_process()  # as a user's script ends a distributed fit (preflight.process_exit)
