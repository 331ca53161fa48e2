"""The reward of sampled completions: a function named by import path (which runs that code: name only your own or
code you trust) or a reward model trained by preflight's `RewardModule`."""

from __future__ import annotations

import importlib
import numbers
from pathlib import Path
from collections.abc import Sized
from typing import Any, Callable, Sequence

from torch import Tensor

from ..errors import PreflightConfigError

RewardFunction = Callable[[list[str], list[str]], Sequence[float]]


class GenerationEvalError(PreflightConfigError):
    """A generation evaluation that cannot run: no reward, a module or strategy that cannot generate."""


class RewardError(PreflightConfigError):
    """A reward function that raised, or returned something other than one real number per completion."""


def reward_values(returned: Any, count: int, what: str) -> list[float]:
    """`returned` as `count` floats, or a `RewardError` naming what came back: the values a data file's scores may
    hold (real numbers; not None, strings or bools)."""
    if returned is None or isinstance(returned, (str, bytes, bool, int, float)) or not isinstance(returned, Sized):
        raise RewardError(f"{what} returned {_shown(returned)}, not a list of {count} numbers (one per completion)")
    if len(returned) != count:
        raise RewardError(f"{what} returned {len(returned)} scores for {count} completions")
    values = []
    for k, value in enumerate(returned, start=1):
        if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
            value = value.item()  # a 0-d tensor or NumPy number
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise RewardError(f"{what}: score {k} is {_shown(value)}, not a number")
        values.append(float(value))
    return values


def _shown(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}" if value is not None else "None"


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


def load_reward_model(spec: str):
    """A `RewardModule` from its checkpoint, its run folder, or its exported folder, in eval mode, frozen."""
    from ..export import module_from_checkpoint
    from ..modules import RewardModule
    from ..runs import resolve_checkpoint

    path = Path(spec)
    if path.is_dir() and (path / "config.json").is_file():  # an exported folder
        module = RewardModule(str(path))
        module.configure_model()
    else:
        try:
            module, _ = module_from_checkpoint(resolve_checkpoint(path))
        except FileNotFoundError as err:
            raise GenerationEvalError(f"reward_model {spec!r}: {err}") from None
        if not isinstance(module, RewardModule):
            raise GenerationEvalError(f"reward_model {spec!r} holds a {type(module).__name__}, not a RewardModule")
    return module.eval().requires_grad_(False)


def completions_as_groups(
    prompts: list[list[int]], completions: list[list[int]], eos: int, indices: list[int] | None = None
) -> list:
    """Each sampled completion as a group of one after its prompt (an empty one as the EOS token): what a reward model
    scores and the log-prob engine reads for samples without a partner, one row each."""
    from ..datamodules.tokenization import TokenizedList

    indices = range(len(prompts)) if indices is None else indices
    return [TokenizedList(i, p, [c or [eos]], [0.0]) for i, p, c in zip(indices, prompts, completions)]


class Reward:
    """r(x, y) for each completion: the function on the decoded texts, or the reward model on the token ids.

    Args:
        function: the reward function, or its import path (``package.module:function``).
        model: a reward model's checkpoint, run folder or exported folder (instead of ``function``).
    """

    def __init__(self, function: str | RewardFunction | None = None, model: str | None = None) -> None:
        if (function is None) == (model is None):
            raise GenerationEvalError("GenerationEval needs exactly one of reward (a function) and reward_model")
        self.function_spec, self.model_spec = function, model
        self.function: RewardFunction | None = None
        self.model = None

    def load(self) -> None:
        """Import the function or load the reward model (once)."""
        if self.function_spec is not None:
            spec = self.function_spec
            self.function = load_reward_function(spec) if isinstance(spec, str) else spec
        elif self.model is None:
            self.model = load_reward_model(self.model_spec)

    def prepare(self, device, pad_token_id: int) -> None:
        """The reward model on `device`, reading the score at the last token that is not `pad_token_id`."""
        if self.model is not None:
            self.model.to(device)
            self.model.use_pad_token_id(pad_token_id)

    def __call__(self, batch: dict[str, Tensor], prompts: list[str], texts: list[str], where: str = "") -> list[float]:
        """One float per completion. `where` (``round 2, prompt 7``) goes into the one-line error a reward function
        that raises, or returns anything but one real number per completion, ends with."""
        if self.function is not None:
            name = self.function_spec if isinstance(self.function_spec, str) else "the reward function"
            at = f" ({where})" if where else ""
            try:
                returned = self.function(prompts, texts)
            except Exception as err:  # the user's own code: one line here, its traceback with PREFLIGHT_DEBUG=1
                first = (str(err).strip().splitlines() or [""])[0][:200]
                raise RewardError(
                    f"reward {name!r}{at} raised {type(err).__name__}: {first} (PREFLIGHT_DEBUG=1 shows its traceback)"
                ) from err
            return reward_values(returned, len(texts), f"reward {name!r}{at}")
        device = next(self.model.parameters()).device
        return self.model.rewards({k: v.to(device) for k, v in batch.items()})[: len(texts)].tolist()
