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
from pathlib import Path
from typing import Any

import lightning as L
import torch

from .generation.sampling import Prompt, SeededSampler, share_of
from .generation.scoring import (
    GenerationEvalError,
    Reward,
    RewardFunction,
    completions_as_groups,
    load_reward_function,
)
from .generation.tables import gather_rows, log_values, summarize, write_generations
from .policy import Policy

__all__ = ["GenerationEval", "GenerationEvalError", "RewardFunction", "load_reward_function"]


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
        self.reward = Reward(reward, reward_model)
        if num_prompts < 1 or max_new_tokens < 1 or temperature <= 0:
            raise GenerationEvalError("GenerationEval: num_prompts and max_new_tokens must be ≥ 1, temperature > 0")
        self.num_prompts, self.max_new_tokens, self.temperature = num_prompts, max_new_tokens, temperature
        self.every_n_steps, self.seed, self.write_table = every_n_steps, seed, write_table
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
        self.reward.load()

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
        """Sample (`generation.sampling`), score (`generation.scoring`) and log (`generation.tables`) once;
        returns the logged values."""
        self._last_step = trainer.global_step
        world = trainer.world_size
        mine = share_of(self._prompts(trainer), world, trainer.global_rank)
        tokenizer, pad = trainer.datamodule.tokenizer, trainer.datamodule.collator.pad_token_id
        policy, reference = pl_module.policy, reference_context(pl_module)
        synced = world > 1 and pl_module.device_mesh is not None  # FSDP2: forwards in step
        sample = SeededSampler(self.max_new_tokens, self.temperature, self.seed, synced)
        self.reward.prepare(pl_module.device, pad)
        was_training = policy.training
        policy.eval()
        try:
            samples = sample(policy, mine, tokenizer.eos_token_id, pad)
            if reference is not None:
                missing = [prompt for prompt in mine if prompt[0] not in self._reference_samples]
                if missing:
                    with reference() as model:
                        drawn = sample(model, missing, tokenizer.eos_token_id, pad)
                    self._reference_samples.update(zip((index for index, _ in missing), drawn))
            rows = self._score(pl_module, mine, samples, tokenizer, reference)
        finally:
            policy.train(was_training)
        rows = gather_rows(rows, world)
        self.last_rows, self.last_samples = rows, dict(zip((i for i, _ in mine), samples))
        self.last_values = values = summarize(rows, with_reference=reference is not None)
        log_values(trainer, values)
        if self.write_table:
            folder = Path(trainer.log_dir or trainer.default_root_dir)  # log_dir is a collective: every process asks
            if trainer.is_global_zero:
                write_generations(trainer, folder, rows)
        return values

    def _prompts(self, trainer: L.Trainer) -> list[Prompt]:
        data = trainer.datamodule.dataset("val")
        if data is None or len(data) == 0:
            raise GenerationEvalError("GenerationEval samples validation prompts: set data.val (or data.val_split)")
        return [(i, list(data[i].prompt_ids)) for i in range(min(self.num_prompts, len(data)))]

    def _score(self, pl_module, mine: list[Prompt], samples, tokenizer, reference) -> list[dict[str, Any]]:
        """One row per prompt: the texts, the rewards, and log π_θ(y|x) − log π_ref(y|x) of the policy's sample (each
        completion a group of one: one row, where a pair would compute it twice)."""
        from .datamodules.collate import ListCollator

        eos = tokenizer.eos_token_id
        pad = pl_module.trainer.datamodule.collator.pad_token_id
        indices, prompt_ids = [i for i, _ in mine], [prompt for _, prompt in mine]

        def groups_of(completions):
            return completions_as_groups(prompt_ids, completions, eos, indices)

        def batch_of(completions):
            batch = ListCollator(pad, mode="list")(groups_of(completions))
            return {k: v.to(pl_module.device) for k, v in batch.items()}

        decode = lambda ids: tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
        prompts = [decode(prompt) for _, prompt in mine]
        texts = [decode(sample) for sample in samples]
        batch = batch_of(samples)
        policy_rewards = self.reward(batch, prompts, texts, f"validation at step {pl_module.global_step}")
        rows = [
            {
                "index": index,
                "prompt": prompts[k],
                "policy_completion": texts[k],
                "policy_reward": policy_rewards[k],
                "policy_tokens": len(sample),
            }
            for k, ((index, _), sample) in enumerate(zip(mine, samples))
        ]
        if reference is not None:
            groups = groups_of(samples)
            policy_logps = Policy(pl_module.policy, tokenizer, pl_module.logps).logps(groups)
            with reference() as model:
                reference_logps = Policy(model, tokenizer, pl_module.logps).logps(groups)
            log_ratio = [mine_[0] - theirs[0] for mine_, theirs in zip(policy_logps, reference_logps)]
            reference_completions = [self._reference_samples[index] for index, _ in mine]
            reference_texts = [decode(c) for c in reference_completions]
            reference_rewards = self.reward(
                batch_of(reference_completions), prompts, reference_texts, "the reference's samples"
            )
            for k, row in enumerate(rows):
                row.update(
                    reference_completion=reference_texts[k],
                    reference_reward=reference_rewards[k],
                    log_ratio=log_ratio[k],
                )
        return rows


def reference_context(pl_module):
    """A function giving the reference model as a context (the frozen copy, or the policy with its LoRA adapter
    disabled), or None where there is none (reference: none, or precomputed without an adapter to disable):
    then only reward and length are logged."""
    from .wrapped import is_peft

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
