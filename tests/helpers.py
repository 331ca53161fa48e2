"""Shared builders for module tests: tiny models, hand-made batches, a naive log-prob."""

import json
import os
import signal

import torch
from lightning.pytorch.callbacks import Callback
from transformers import AutoConfig, AutoModelForCausalLM

from preflight.datamodules import PreferenceCollator, TokenizedPair
from tests.conftest import TINY_MODEL


def tiny_causal_lm(seed=0, **overrides):
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(TINY_MODEL, **overrides))


def random_pairs(n=4, seed=0, vocab=384):
    g = torch.Generator().manual_seed(seed)
    rand = lambda lo, hi: int(torch.randint(lo, hi, (1,), generator=g))  # noqa: E731
    ids = lambda k: torch.randint(3, vocab, (k,), generator=g).tolist()  # noqa: E731
    return [TokenizedPair(i, [1] + ids(rand(2, 9)), ids(rand(1, 12)), ids(rand(1, 12))) for i in range(n)]


def batch_of(pairs, pad=0):
    return PreferenceCollator(pad)(pairs)


def naive_sequence_logps(model, prompt, completion):
    """One unpadded sequence; log p of each completion token from the logits, summed in float64."""
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()
    total = 0.0
    for k, token in enumerate(completion):
        total += torch.log_softmax(logits[len(prompt) + k - 1], -1)[token].item()
    return total


class SeenTrainMetrics(Callback):
    """Appends, at each `on_train_batch_end` that ends an optimizer step, the step and the ``train/`` values of
    `trainer.callback_metrics` as one JSON line to `path` (rank 0 alone): what a user's callback sees.

    Args:
        path: the JSON-lines file to append to.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        last = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        if ((batch_idx + 1) % trainer.accumulate_grad_batches and not last) or not trainer.is_global_zero:
            return
        seen = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")}
        with open(self.path, "a") as f:
            f.write(json.dumps({"global_step": trainer.global_step, "seen": seen}) + "\n")


class KillAt(Callback):
    """SIGKILLs its own process at the end of the optimizer step `step`, as an out-of-memory killer or a
    preempting scheduler would (no handler, no cleanup).

    Args:
        step: the global step after which the process is killed.
    """

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def trl_dpo_trainer(rows, tokenizer, output_dir):
    """TRL's DPOTrainer over `rows` (standard or conversational pairs) with the tiny model, no truncation: its
    tokenized dataset and collator are what preflight's data is compared with. Skips where TRL is not installed."""
    import copy

    import pytest

    pytest.importorskip("trl", reason="compares with TRL, which is not installed")
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(TINY_MODEL))
    args = DPOConfig(output_dir=str(output_dir), report_to=[], max_length=None, use_cpu=True)
    return DPOTrainer(
        model=model,
        ref_model=copy.deepcopy(model),
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )


def quiet_trainer(steps: int = 4, **kwargs):
    """A plain Lightning `Trainer` on the CPU for `steps` optimizer steps, writing and printing nothing (no logger,
    checkpoints, progress bar or summary): how the tests fit a module outside the command."""
    import lightning as L

    return L.Trainer(
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        **kwargs,
    )


def forced(fused: bool, shared: bool):
    """A log-prob engine that takes exactly these paths (``on`` is an error where a path is not exact), through the
    public settings, without padding-free rows."""
    from preflight.logps import CompletionLogps, LogpsSettings

    on_off = lambda flag: "on" if flag else "off"  # noqa: E731
    return CompletionLogps(LogpsSettings(fused_lm_head=on_off(fused), shared_prompt=on_off(shared), padding_free="off"))


def length_reward(prompts, completions):
    """A reward for tests of `preflight iterate`: the completion's length in characters (rarely tied)."""
    return [float(len(text)) for text in completions]


def nan_reward(prompts, completions):
    """A reward for tests of `preflight iterate`'s refusal: not a number for the second completion."""
    return [float("nan") if k == 1 else 0.0 for k in range(len(completions))]


class GradNorms(Callback):
    """Appends, before each optimizer step, the step (1-based) and the global L2 norm of the gradients, computed by
    `torch.nn.utils.get_total_norm`, as one JSON line to `path`: what the logged ``train/grad_norm`` should be.

    Args:
        path: the JSON-lines file to append to.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        norm = float(torch.nn.utils.get_total_norm(grads))
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": trainer.global_step + 1, "grad_norm": norm}) + "\n")


def negative_length_reward(prompts, completions):
    """`length_reward` turned around: a rerun that changes the reward must not mix the two in one file."""
    return [-float(len(text)) for text in completions]


_CALLS = {"n": 0}


def length_reward_killed_on_third_call(prompts, completions):
    """`length_reward`, whose process is SIGKILLed at its third call when ``PREFLIGHT_TEST_KILL`` is set: a kill
    mid-way through a round's sampling (a rerun without the variable scores as `length_reward`)."""
    _CALLS["n"] += 1
    if _CALLS["n"] == 3 and os.environ.get("PREFLIGHT_TEST_KILL"):
        os.kill(os.getpid(), signal.SIGKILL)
    return length_reward(prompts, completions)


def reward_returning_none(prompts, completions):
    return None


def reward_returning_a_scalar(prompts, completions):
    return 1.0


def reward_returning_strings(prompts, completions):
    return ["good"] * len(completions)


def reward_returning_bools(prompts, completions):
    return [True] * len(completions)


def reward_that_raises(prompts, completions):
    return {}["score"]  # a KeyError in the user's own code


class LiveModels(Callback):
    """Writes, when training starts, how many `torch.nn.Module`s with at least one parameter of `size` elements are
    alive in the process (by the garbage collector's view) to `path`: the models a round's fit holds in memory.

    Args:
        path: the file to write the count to.
        size: the element count of the embedding matrix that identifies the models of interest.
    """

    def __init__(self, path: str, size: int) -> None:
        self.path, self.size = path, size

    def on_train_start(self, trainer, pl_module) -> None:
        import gc

        gc.collect()
        embeddings = [
            o for o in gc.get_objects() if isinstance(o, torch.nn.Embedding) and o.weight.numel() == self.size
        ]
        with open(self.path, "w") as f:
            f.write(str(len(embeddings)))
