"""`Policy`: a causal language model for everything that is not training (litgpt's ``LLM``): sampling, the log-probs
of given completions, and export. `preflight iterate` samples and scores with it; anyone can:

    policy = Policy.load("runs/iterative_dpo/rounds/1/policy", tokenizer="assets/tokenizer")
    completions = policy.sample([prompt_ids], n=4, seed=0)
    logps = policy.logps([TokenizedList(0, prompt_ids, completions[0], [0.0] * 4)])

A completion is scored as part of a *group*, a prompt with its completions (a group of one for a single sample), all
computed in one prompt forward by the log-prob engine's K-segment rows where that is exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from .datamodules.tokenization import TokenizedList
from .generation.sampling import SeededSampler
from .logps import CompletionLogps, LogpsSettings


@dataclass
class Policy:
    """A model with its tokenizer, its log-prob engine and a seeded sampler (`load` puts it in eval mode; a training
    module's model can be wrapped as it is, as `GenerationEval` does).

    Args:
        model: the causal language model (a transformers ``PreTrainedModel``, or a PEFT model around one).
        tokenizer: its tokenizer (None where only ids are used).
        engine: the log-prob engine, planned once for `model` (`preflight.logps.CompletionLogps`).
    """

    model: nn.Module
    tokenizer: Any = None
    engine: CompletionLogps | None = None

    def __post_init__(self) -> None:
        self.engine = self.engine or CompletionLogps()

    @classmethod
    def load(
        cls,
        spec: Any,
        tokenizer: Any = None,
        *,
        device: str | torch.device = "cpu",
        logps: LogpsSettings | None = None,
        trust_remote_code: bool = False,
        init_seed: int = 0,
        dtype: str | None = None,
        attn_implementation: str | None = None,
    ) -> Policy:
        """The model at `spec` (a folder, a Hub id, or a model), with `tokenizer` (a spec or an instance; None: the
        model folder's own, where it has one).

        Args:
            spec: the model: a local folder, a Hub id, or an ``nn.Module``.
            tokenizer: the tokenizer, or its folder or id; None: the model folder's, if it holds one.
            device: where the model runs.
            logps: how log-probs are computed (the fast paths, their sizes); None: every path ``auto``.
            trust_remote_code: allow model and tokenizer code from the folder or the Hub.
            init_seed: the seed of the random weights of a folder that holds only a config.
            dtype: the dtype the weights are loaded in (None: the checkpoint's).
            attn_implementation: the transformers attention implementation (None: its default).
        """
        from transformers import AutoModelForCausalLM

        from .pretrained import load_model, load_tokenizer

        model = load_model(
            spec,
            AutoModelForCausalLM,
            trust_remote_code=trust_remote_code,
            init_seed=init_seed,
            dtype=dtype,
            attn_implementation=attn_implementation,
        ).to(device)
        model.eval()
        if tokenizer is None and isinstance(spec, (str, Path)) and (Path(spec) / "tokenizer_config.json").is_file():
            tokenizer = str(spec)
        if isinstance(tokenizer, (str, Path)):
            tokenizer = load_tokenizer(str(tokenizer), trust_remote_code=trust_remote_code)
        return cls(model, tokenizer, CompletionLogps(logps))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def pad_token_id(self) -> int:
        pad = self.tokenizer.pad_token_id if self.tokenizer is not None else None
        return pad if pad is not None else self.tokenizer.eos_token_id

    @torch.no_grad()
    def logps(self, groups: Sequence[TokenizedList]) -> list[list[float]]:
        """Σ_t log π(y_t | x, y_<t) of each completion of each group (a prompt's ids and its completions' ids), in
        float32: one list per group, in order. A group of one is a single sample, computed once (no partner row)."""
        from .datamodules.collate import ListCollator

        if not groups:
            return []
        batch = ListCollator(self.pad_token_id, mode="list")(list(groups))
        flat = self.engine(self.model, {k: v.to(self.device) for k, v in batch.items()}).tolist()
        out, at = [], 0
        for group in groups:
            out.append(flat[at : at + len(group.completion_ids)])
            at += len(group.completion_ids)
        return out

    @torch.no_grad()
    def sample(
        self,
        prompts: Sequence[list[int]],
        n: int = 1,
        *,
        seed: int = 0,
        max_new_tokens: int = 48,
        temperature: float = 1.0,
        top_p: float = 1.0,
        indices: Sequence[int] | None = None,
    ) -> list[list[list[int]]]:
        """`n` completions (token ids, up to and with the EOS token) of each prompt; prompt i's are drawn with a seed
        derived from `seed` and its index (``indices[i]``, default i), so any subset, order or resumed run samples
        the same."""
        sampler = SeededSampler(max_new_tokens, temperature, seed, top_p=top_p)
        indices = range(len(prompts)) if indices is None else indices
        eos = self.tokenizer.eos_token_id
        return sampler.many(self.model, list(zip(indices, [list(p) for p in prompts])), n, eos, self.pad_token_id)

    def export(self, out: str | Path, merge_lora: bool = True) -> Path:
        """Write the model (and the tokenizer) as a Hugging Face folder (`preflight.export.export_module`'s rules)."""
        from .export import export_module

        return export_module(self.model, out, self.tokenizer, merge_lora)
