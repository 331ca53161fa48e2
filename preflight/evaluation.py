"""Evaluation by generation: what the policy samples, scored by a reward, against the reference.

`GenerationEval` is a Lightning `Callback` (usable from a config's ``trainer.callbacks`` or in plain
Lightning code) that, at each validation or every N optimizer steps, samples one completion per prompt
of a fixed set of validation prompts from the policy (and, once, from the reference), scores them with
a reward, and logs:

- ``val/gen/reward``: the mean reward r(x, y) of the policy's samples;
- ``val/gen/win_rate``: the fraction of prompts whose policy sample the reward prefers to the
  reference's sample (ties count one half);
- ``val/gen/kl``: the Monte-Carlo estimate of KL(π_θ ‖ π_ref) = E_{y~π_θ}[log π_θ(y|x) − log π_ref(y|x)]
  from the policy's samples (exact in expectation when sampling at temperature 1 without top-k/top-p,
  the default);
- ``val/gen/length``: the mean number of sampled tokens;

and appends every sample to ``generations.csv`` in the run's log folder (as a text table to TensorBoard
or W&B when that logger is configured). Sampling is seeded per prompt, so two runs, or one run on any
number of processes, sample the same completions from the same weights.
"""

from __future__ import annotations

import contextlib
import csv
import importlib
from pathlib import Path
from typing import Any, Callable, Sequence

import lightning as L
import torch
import torch.distributed as dist

from .errors import PreflightConfigError

RewardFunction = Callable[[list[str], list[str]], Sequence[float]]


class GenerationEvalError(PreflightConfigError):
    """A generation evaluation that cannot run: no reward, a module or strategy that cannot generate."""


def load_reward_function(path: str) -> RewardFunction:
    """The callable a config names by import path: ``package.module:function`` or ``package.module.function``."""
    module_name, _, attribute = path.rpartition(":") if ":" in path else path.rpartition(".")
    if not module_name:
        raise GenerationEvalError(f"reward {path!r}: name a function as package.module:function")
    try:
        function = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as err:
        raise GenerationEvalError(f"reward {path!r} cannot be imported ({err})") from None
    if not callable(function):
        raise GenerationEvalError(f"reward {path!r} is not callable")
    return function


class GenerationEval(L.Callback):
    r"""Samples from the policy and the reference on fixed validation prompts and logs their reward, the
    policy's win rate against the reference, the KL estimate and the length (``val/gen/*``).

    KL(π_θ ‖ π_ref) is estimated as the mean over prompts of log π_θ(y|x) − log π_ref(y|x) for
    y ~ π_θ(·|x), the quantity the seed's objective (Eq. 3) trades against reward (DPO, arXiv 2305.18290,
    §6.1 reports this frontier).

    Args:
        reward: the reward, by import path: a function ``f(prompts, completions) -> list of floats`` taking
            the decoded prompt and completion texts (``package.module:function``). Give this or ``reward_model``.
        reward_model: a reward model trained by preflight's ``RewardModule``: its checkpoint, its run folder,
            or its exported folder; it scores the token ids, so it must share the policy's tokenizer.
        num_prompts: how many validation prompts (the first of the val split) are sampled each time.
        max_new_tokens: the most tokens sampled per completion (sampling also stops at the EOS token).
        temperature: the sampling temperature; 1.0 samples from π itself, as the KL estimate assumes.
        every_n_steps: sample every this many optimizer steps; None samples at the end of each validation.
        seed: the seed of prompt i's samples is derived from it and i, whatever the process and the step.
        write_table: append every sample to ``generations.csv`` in the run's log folder.
    """

    def __init__(
        self,
        reward: str | RewardFunction | None = None,
        reward_model: str | None = None,
        num_prompts: int = 16,
        max_new_tokens: int = 48,
        temperature: float = 1.0,
        every_n_steps: int | None = None,
        seed: int = 0,
        write_table: bool = True,
    ) -> None:
        if (reward is None) == (reward_model is None):
            raise GenerationEvalError("GenerationEval needs exactly one of reward (a function) and reward_model")
        if num_prompts < 1 or max_new_tokens < 1 or temperature <= 0:
            raise GenerationEvalError("GenerationEval: num_prompts and max_new_tokens must be ≥ 1, temperature > 0")
        self.reward_spec, self.reward_model_spec = reward, reward_model
        self.num_prompts, self.max_new_tokens, self.temperature = num_prompts, max_new_tokens, temperature
        self.every_n_steps, self.seed, self.write_table = every_n_steps, seed, write_table
        self._reward_fn: RewardFunction | None = None
        self._reward_module = None
        self._reference_samples: dict[int, list[int]] = {}
        self._last_step: int | None = None
        self.last_values: dict[str, float] = {}  # the latest evaluation's logged values
        self.last_rows: list[dict[str, Any]] = []  # the latest evaluation's rows (all processes), by prompt
        self.last_samples: dict[int, list[int]] = {}  # this process's latest policy samples (token ids), by prompt

    # ------------------------------------------------------------------ set-up
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        from lightning.pytorch.strategies import FSDPStrategy

        from .modules import PreferenceModule

        if not isinstance(pl_module, PreferenceModule):
            raise GenerationEvalError(
                f"GenerationEval samples from a PreferenceModule's policy, not a {type(pl_module).__name__}"
            )
        if isinstance(trainer.strategy, FSDPStrategy):
            raise GenerationEvalError(
                "GenerationEval cannot sample under FSDPStrategy (the policy's weights are "
                "sharded outside the root unit's forward): use ModelParallelStrategy or DDP"
            )
        if self.reward_spec is not None:
            self._reward_fn = (
                load_reward_function(self.reward_spec) if isinstance(self.reward_spec, str) else self.reward_spec
            )
        elif self._reward_module is None:
            self._reward_module = _load_reward_model(self.reward_model_spec).eval().requires_grad_(False)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking and self.every_n_steps is None:
            self.evaluate(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every_n_steps and step % self.every_n_steps == 0 and step != self._last_step:
            self.evaluate(trainer, pl_module)

    # ------------------------------------------------------------------ one evaluation
    @torch.no_grad()
    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """Sample, score and log once; returns the logged values."""
        self._last_step = trainer.global_step
        prompts = self._prompts(trainer)
        world, rank = trainer.world_size, trainer.global_rank
        share = -(-len(prompts) // world)  # every process samples as many prompts (FSDP2 needs equal forwards)
        mine = [prompts[min(i, len(prompts) - 1)] for i in range(rank * share, (rank + 1) * share)]
        tokenizer = trainer.datamodule.tokenizer
        policy, reference = pl_module.policy, _reference_sampler(pl_module)
        synced = world > 1 and pl_module.device_mesh is not None  # FSDP2: forwards in step
        if self._reward_module is not None:
            self._reward_module.to(pl_module.device)
            self._reward_module.use_pad_token_id(trainer.datamodule.collator.pad_token_id)
        was_training = policy.training
        policy.eval()
        try:
            pad = trainer.datamodule.collator.pad_token_id
            samples = [
                self._sample(policy, index, prompt, tokenizer.eos_token_id, pad, synced) for index, prompt in mine
            ]
            if reference is not None:
                for index, prompt in mine:
                    if index not in self._reference_samples:
                        with reference() as model:
                            self._reference_samples[index] = self._sample(
                                model, index, prompt, tokenizer.eos_token_id, pad, synced
                            )
            rows = self._score(pl_module, mine, samples, tokenizer, reference)
        finally:
            policy.train(was_training)
        everyone = [None] * world
        if world > 1 and dist.is_available() and dist.is_initialized():
            dist.all_gather_object(everyone, rows)
        else:
            everyone = [rows]
        by_prompt = {row["index"]: row for part in everyone for row in part}
        rows = [by_prompt[i] for i in sorted(by_prompt)]
        self.last_rows, self.last_samples = rows, dict(zip((i for i, _ in mine), samples))
        values = {
            "val/gen/reward": _mean([r["policy_reward"] for r in rows]),
            "val/gen/length": _mean([r["policy_tokens"] for r in rows]),
        }
        if reference is not None:
            values["val/gen/win_rate"] = _mean(
                [
                    1.0
                    if r["policy_reward"] > r["reference_reward"]
                    else 0.5
                    if r["policy_reward"] == r["reference_reward"]
                    else 0.0
                    for r in rows
                ]
            )
            values["val/gen/kl"] = _mean([r["log_ratio"] for r in rows])
        self.last_values = values
        # straight to the loggers (and callback_metrics, which checkpoint monitors read): the values are already
        # the same on every process, and this also works when called outside Lightning's loops
        trainer.callback_metrics.update({k: torch.tensor(v) for k, v in values.items()})
        for logger in trainer.loggers:
            logger.log_metrics(values, step=trainer.global_step)
        if self.write_table:
            folder = Path(trainer.log_dir or trainer.default_root_dir)  # log_dir is a collective: every process asks
            if trainer.is_global_zero:
                self._write(trainer, folder, rows)
        return values

    def _prompts(self, trainer: L.Trainer) -> list[tuple[int, list[int]]]:
        data = trainer.datamodule.dataset("val")
        if data is None or len(data) == 0:
            raise GenerationEvalError("GenerationEval samples validation prompts: set data.val (or data.val_split)")
        return [(i, list(data[i].prompt_ids)) for i in range(min(self.num_prompts, len(data)))]

    def _sample(self, model, index: int, prompt: list[int], eos: int, pad: int, synced: bool) -> list[int]:
        device = next(model.parameters()).device
        ids = torch.tensor([prompt], device=device)
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed * 1_000_003 + index)
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                do_sample=True,
                temperature=self.temperature,
                top_k=0,
                top_p=1.0,
                max_new_tokens=self.max_new_tokens,
                eos_token_id=eos,
                pad_token_id=pad,
                synced_gpus=synced,
            )
        return out[0, len(prompt) :].tolist()

    def _score(self, pl_module, mine, samples, tokenizer, reference) -> list[dict[str, Any]]:
        from .datamodules import TokenizedPair

        collate = pl_module.trainer.datamodule.collator
        device = pl_module.device

        def pairs_of(completions):
            return collate(
                [
                    TokenizedPair(index, prompt, c or [tokenizer.eos_token_id], c or [tokenizer.eos_token_id])
                    for (index, prompt), c in zip(mine, completions)
                ]
            )

        decode = lambda ids: tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
        prompts = [decode(prompt) for _, prompt in mine]
        texts = [decode(sample) for sample in samples]
        batch = {k: v.to(device) for k, v in pairs_of(samples).items()}
        B = len(mine)
        rows = []
        policy_rewards = self._rewards(batch, prompts, texts)
        log_ratio = None
        if reference is not None:
            policy_logps = pl_module.completion_logps(pl_module.policy, batch)[:B]
            with reference() as model:
                reference_logps = pl_module.completion_logps(model, batch)[:B]
            log_ratio = (policy_logps - reference_logps).tolist()
            reference_completions = [self._reference_samples[index] for index, _ in mine]
            reference_texts = [decode(c) for c in reference_completions]
            reference_rewards = self._rewards(pairs_of(reference_completions), prompts, reference_texts)
        for k, ((index, _), sample) in enumerate(zip(mine, samples)):
            row = {
                "index": index,
                "prompt": prompts[k],
                "policy_completion": texts[k],
                "policy_reward": policy_rewards[k],
                "policy_tokens": len(sample),
            }
            if reference is not None:
                row.update(
                    reference_completion=reference_texts[k],
                    reference_reward=reference_rewards[k],
                    log_ratio=log_ratio[k],
                )
            rows.append(row)
        return rows

    def _rewards(self, batch, prompts: list[str], texts: list[str]) -> list[float]:
        """The reward of each completion: the function on the decoded texts, or the reward model on the ids."""
        if self._reward_fn is not None:
            scores = [float(s) for s in self._reward_fn(prompts, texts)]
            if len(scores) != len(texts):
                raise GenerationEvalError(
                    f"reward {self.reward_spec!r} returned {len(scores)} scores for {len(texts)} completions"
                )
            return scores
        module = self._reward_module
        device = next(module.parameters()).device
        return module.rewards({k: v.to(device) for k, v in batch.items()})[: len(texts)].tolist()

    def _write(self, trainer: L.Trainer, folder: Path, rows: list[dict[str, Any]]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "generations.csv"
        fields = ["step", *rows[0].keys()]
        new = not path.exists()
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            if new:
                writer.writeheader()
            for row in rows:
                writer.writerow({"step": trainer.global_step, **row})
        for logger in trainer.loggers:
            experiment = getattr(logger, "experiment", None)
            if hasattr(experiment, "add_text"):  # TensorBoard
                table = "\n".join(
                    f"| {r['prompt'][:200]} | {r['policy_completion'][:400]} | {r['policy_reward']:.3f} |" for r in rows
                )
                experiment.add_text(
                    "val/gen/samples", "| prompt | policy | reward |\n|---|---|---|\n" + table, trainer.global_step
                )
            elif hasattr(logger, "log_text"):  # W&B
                logger.log_text(
                    "val/gen/samples", columns=fields, data=[[trainer.global_step, *r.values()] for r in rows]
                )


def _reference_sampler(pl_module):
    """A function giving the reference model as a context (the frozen copy, or the policy with its LoRA adapter
    disabled), or None where there is none (reference: none, or precomputed without an adapter to disable):
    then only reward and length are logged."""
    from .modules.models import is_peft

    if pl_module.reference_model is None and not is_peft(pl_module.policy):
        return None

    @contextlib.contextmanager
    def reference():
        if pl_module.reference_model is not None:
            yield pl_module.reference_model
        else:
            with pl_module.policy.disable_adapter():
                yield pl_module.policy

    return reference


def _load_reward_model(spec: str):
    from .export import module_from_checkpoint
    from .modules import RewardModule
    from .runs import resolve_checkpoint

    path = Path(spec)
    if path.is_dir() and (path / "config.json").is_file():  # an exported folder
        module = RewardModule(str(path))
        module.configure_model()
        return module
    try:
        module, _ = module_from_checkpoint(resolve_checkpoint(path))
    except FileNotFoundError as err:
        raise GenerationEvalError(f"reward_model {spec!r}: {err}") from None
    if not isinstance(module, RewardModule):
        raise GenerationEvalError(f"reward_model {spec!r} holds a {type(module).__name__}, not a RewardModule")
    return module


def _mean(values: list[float]) -> float:
    return sum(values) / max(len(values), 1)
