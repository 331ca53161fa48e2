"""What `preflight iterate` runs: `IterateSettings`, whose fields are the keys of ``configs/iterative_dpo.yaml``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ..datamodules.lists import LIST_MODES, ListMode
from ..errors import PreflightConfigError

ReferenceRule = Literal["initial", "previous"]


@dataclass
class IterateSettings:
    r"""Iterative preference optimization: R rounds of sample → score → pair → train, each learning from the current
    policy's own samples (the expectation over y ~ π_θ of the seed's Eq. 3, which offline DPO replaces by another
    policy's data). Iterative DPO as in RLHFlow (arXiv 2405.07863) and self-rewarding LMs (arXiv 2401.10020).

    Round r samples ``samples_per_prompt`` completions per prompt from π_{r−1} (π_0: the initial policy), scores
    them, writes ``rounds/r/completions.jsonl`` (prompt, completions, scores, the sampling policy's log-probs) and
    trains π_r from π_{r−1} by an ordinary ``preflight fit`` on that list file. Then π_r samples one completion for
    each of ``eval_prompts`` fixed prompts: its mean reward, its win rate against π_0's samples of those prompts,
    and the Monte-Carlo KL(π_r ‖ π_0) = E_{y~π_r}[log π_r(y|x) − log π_0(y|x)] are printed and written to
    ``metrics.csv``.

    Args:
        fit: each round's ``preflight fit`` config (``seed_everything``, ``model``, ``data``, ``trainer``, as
            ``configs/dpo.yaml`` has them). Its ``model`` is the initial policy; each round sets the policy to the
            previous round's, the reference per ``reference``, ``data.train`` to the round's list file and
            ``data.pairs_from_lists``. Written out as ``rounds/r/fit.yaml``, which ``preflight fit`` also runs.
        prompts: the prompts: a file (JSONL, JSON, Parquet, CSV) or datasets folder whose rows have a ``prompt``
            (text or messages): a file of prompts, or a preference or list file (its prompts).
        rounds: R, the number of rounds.
        out: the folder of the rounds (``rounds/0/policy``: the initial policy; ``rounds/r/``: the round's
            completions, fit config, run and policy) and of ``metrics.csv``.
        reference: the reference of round r's loss: ``initial`` (π_0, fixed) or ``previous`` (π_{r−1}).
        samples_per_prompt: N ≥ 2 completions sampled per prompt each round.
        prompts_per_round: prompts sampled each round: None, all of them every round; a number, the next block
            of that many each round (round r takes prompts (r−1)·n … r·n − 1, wrapping around the set).
        eval_prompts: the first this many prompts, sampled once by π_0 and once by each round's policy for the
            round's line (reward, win rate against π_0, KL to π_0); 0 reports only the samples' reward.
        temperature: the sampling temperature (1.0 samples π itself, as the KL estimate assumes).
        top_p: nucleus sampling's probability mass (1.0: the whole distribution).
        max_new_tokens: the most tokens sampled per completion (sampling also stops at the EOS token).
        seed: prompt i's samples in round r are drawn with a seed derived from it, r and i, so a resumed round
            samples what it would have.
        reward: the reward, by import path (``package.module:function``, called as ``f(prompts, completions)``
            on the decoded texts). Naming a callable runs its code: name only your own or code you trust.
        reward_model: instead of ``reward``, a reward model trained by preflight's ``RewardModule``: its
            checkpoint, run folder or exported folder (it scores token ids, so it shares the policy's tokenizer).
        pairs_from_lists: what each round's lists become for the loss: ``best_worst`` (as RLHFlow's iterative
            DPO), ``all``, ``consecutive``, or ``list`` for list-wise losses.
        checkpoint_every_n_steps: each round's fit saves ``last.ckpt`` every this many optimizer steps (and at its
            end), so a killed round resumes at its last saved step.
        sample_batch: prompts sampled, scored and written at a time (a killed round keeps what it wrote).
        device: where sampling runs (None: the GPU when there is one, else the CPU).
    """

    fit: dict[str, Any] = field(default_factory=dict)
    prompts: str = "assets/data/train.jsonl"
    rounds: int = 2
    out: str = "runs/iterative"
    reference: ReferenceRule = "initial"
    samples_per_prompt: int = 4
    prompts_per_round: int | None = None
    eval_prompts: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 48
    seed: int = 0
    reward: str | None = None
    reward_model: str | None = None
    pairs_from_lists: ListMode = "best_worst"
    checkpoint_every_n_steps: int = 10
    sample_batch: int = 8
    device: str | None = None

    def check(self) -> None:
        """Refuse, before any work, settings that cannot run (one line each)."""
        if self.rounds < 1:
            raise PreflightConfigError(f"rounds must be at least 1, got {self.rounds}")
        if self.samples_per_prompt < 2:
            raise PreflightConfigError(f"samples_per_prompt must be at least 2, got {self.samples_per_prompt}")
        if self.reference not in ("initial", "previous"):
            raise PreflightConfigError(f"reference must be initial or previous, got {self.reference!r}")
        if self.pairs_from_lists not in LIST_MODES:
            raise PreflightConfigError(f"pairs_from_lists must be one of {', '.join(LIST_MODES)}")
        if (self.reward is None) == (self.reward_model is None):
            raise PreflightConfigError("give exactly one of reward (an import path) and reward_model")
        if self.prompts_per_round is not None and self.prompts_per_round < 1:
            raise PreflightConfigError("prompts_per_round must be at least 1 (or null: every prompt each round)")
        if not self.temperature > 0 or not 0 < self.top_p <= 1 or self.max_new_tokens < 1:
            raise PreflightConfigError("temperature must be > 0, top_p in (0, 1], max_new_tokens ≥ 1")
        if self.eval_prompts < 0 or self.checkpoint_every_n_steps < 1 or self.sample_batch < 1:
            raise PreflightConfigError("eval_prompts ≥ 0, checkpoint_every_n_steps ≥ 1 and sample_batch ≥ 1")
        devices = (self.fit.get("trainer") or {}).get("devices", 1)
        if devices not in (1, "1", None) and not (isinstance(devices, list) and len(devices) == 1):
            raise PreflightConfigError(
                f"fit.trainer.devices: {devices!r}: preflight iterate samples and trains on one device for now"
            )

    def model_args(self) -> dict[str, Any]:
        """The ``init_args`` of the fit config's model (a mapping without them is taken as `PreferenceModule`'s)."""
        model = self.fit.get("model") or {}
        return dict(model.get("init_args") or {}) if {"class_path", "init_args"} & set(model) else dict(model)

    def data_args(self) -> dict[str, Any]:
        return dict(self.fit.get("data") or {})
