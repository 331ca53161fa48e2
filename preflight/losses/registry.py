"""The loss registry: names (and aliases) to `PreferenceLoss` classes.

Built-in losses register themselves with `@register_loss`. Third-party packages add
theirs through the entry-point group `preflight.losses`; an entry point names either a
module (importing it runs its decorators) or a `PreferenceLoss` class (registered under
the entry point's name). Entry points are loaded lazily, on the first query.
"""

from __future__ import annotations

import difflib
import inspect
import warnings
from importlib.metadata import entry_points
from typing import Any, Callable, TypeVar

from ..errors import PreflightConfigError
from .base import INPUT_KINDS, PreferenceLoss

ENTRY_POINT_GROUP = "preflight.losses"


class LossConfigError(PreflightConfigError):
    """An unknown loss, hyperparameter or loss specification."""


_REGISTRY: dict[str, type[PreferenceLoss]] = {}
_entry_points_loaded = False
_BROKEN_PLUGINS: list[str] = []  # "entry point 'x' = module (distribution d): error", one per plugin that failed

L = TypeVar("L", bound=type[PreferenceLoss])


def register_loss(name: str, *aliases: str) -> Callable[[L], L]:
    """Class decorator: make a `PreferenceLoss` subclass selectable by `name` and `aliases`."""

    def decorator(cls: L) -> L:
        if not (inspect.isclass(cls) and issubclass(cls, PreferenceLoss)):
            raise TypeError(f"@register_loss({name!r}) decorates {cls!r}, which is not a PreferenceLoss subclass")
        for key in (name, *aliases):
            existing = _REGISTRY.get(key)
            if existing is not None and existing is not cls:
                raise LossConfigError(
                    f"loss name {key!r} is already registered by {_qualname(existing)}; "
                    f"cannot register it again for {_qualname(cls)}"
                )
        for key in (name, *aliases):
            _REGISTRY[key] = cls
        cls.registry_names = (name, *aliases)
        return cls

    return decorator


def check_data_kind(loss: PreferenceLoss, data_kind: str) -> None:
    """Refuse, in one line naming both, data of a kind the loss does not take: whole lists or unpaired completions
    for a pair loss, pairs for a list or unpaired loss."""
    wants = INPUT_KINDS.get(loss.input_kind, "pairs")
    if wants == data_kind:
        return
    given = {
        "pairs": "pairs",
        "lists": "whole lists (data.pairs_from_lists: list)",
        "unpaired": "unpaired completions (prompt, completion, label)",
    }[data_kind]

    def named(kind: str) -> str:
        return ", ".join(sorted(n for n, c in _REGISTRY.items() if c.input_kind == kind and n == c.registry_names[0]))

    advice = {
        "pairs": f"choose a list-wise loss ({named('reward_lists' if loss.input_kind == 'rewards' else 'lists')}) "
        "or pairs_from_lists all, best_worst or consecutive"
        if data_kind == "lists"
        else f"choose an unpaired loss ({named('unpaired')}), or give pairs",
        "lists": "train it on list data (prompt, completions, scores) with data.pairs_from_lists: list",
        "unpaired": "train it on unpaired rows (prompt, completion, label), or turn pairs into them with "
        "data.unpair: true",
    }[wants]
    what = {"pairs": "pairs", "lists": "whole lists", "unpaired": "unpaired completions"}[wants]
    raise LossConfigError(f"loss {loss.name!r} takes {what}, but the data gives {given}: {advice}")


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def load_entry_points() -> None:
    """Import every `preflight.losses` entry point once (idempotent)."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    _BROKEN_PLUGINS.clear()
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            target = ep.load()
            if inspect.isclass(target) and issubclass(target, PreferenceLoss) and ep.name not in _REGISTRY:
                register_loss(ep.name)(target)
        except Exception as err:  # a broken plugin must not take the built-in losses and other plugins with it
            distribution = getattr(getattr(ep, "dist", None), "name", None) or "unknown distribution"
            first = (str(err).strip().splitlines() or [""])[0]
            problem = f"entry point {ep.name!r} = {ep.value} ({distribution}): {type(err).__name__}: {first}"
            _BROKEN_PLUGINS.append(problem)
            warnings.warn(f"preflight: loss plugin not loaded: {problem}", RuntimeWarning, stacklevel=2)


def available_losses() -> list[str]:
    """Every registered name and alias, sorted."""
    load_entry_points()
    return sorted(_REGISTRY)


def loss_class(name: str) -> type[PreferenceLoss]:
    """The class registered under `name`; unknown names raise a `ValueError` with the closest match."""
    load_entry_points()
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        broken = f" Plugins that failed to load: {'; '.join(_BROKEN_PLUGINS)}." if _BROKEN_PLUGINS else ""
        raise LossConfigError(
            f"unknown loss {name!r}.{hint}{broken} Available: {', '.join(sorted(_REGISTRY))}"
        ) from None


def loss_hyperparameters(cls: type[PreferenceLoss]) -> dict[str, inspect.Parameter]:
    return {n: p for n, p in inspect.signature(cls.__init__).parameters.items() if n != "self"}


def get_loss(name: str, **hyperparameters: Any) -> PreferenceLoss:
    """An instance of the loss registered as `name`, built with `hyperparameters`."""
    cls = loss_class(name)
    valid = loss_hyperparameters(cls)
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in valid.values())
    unknown = [k for k in hyperparameters if k not in valid]
    if unknown and not accepts_any:
        close = difflib.get_close_matches(unknown[0], valid, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise LossConfigError(
            f"loss {name!r} has no hyperparameter {unknown[0]!r}.{hint} Valid: {', '.join(valid) or '(none)'}"
        )
    for key, value in hyperparameters.items():
        _check_number(name, key, value, valid.get(key))
    return cls(**hyperparameters)


def _check_number(loss: str, key: str, value: Any, parameter: inspect.Parameter | None) -> None:
    """A hyperparameter whose default is a number takes a number (a YAML string such as ``abc`` or ``1e-3x`` would
    fail deep inside the loss with a message that names no key)."""
    default = parameter.default if parameter is not None else inspect.Parameter.empty
    is_number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
    if is_number(default) and not is_number(value):
        raise LossConfigError(f"model.loss.{key} (loss {loss!r}) must be a number, got {value!r}")


def build_loss(spec: Any) -> PreferenceLoss:
    """A loss from any of the forms a config may hold.

    - a registry name: ``"dpo"``
    - a mapping with a name: ``{"name": "ipo", "beta": 0.5}``
    - a ``class_path``/``init_args`` mapping (jsonargparse style)
    - a `PreferenceLoss` instance (returned as is)
    """
    if isinstance(spec, PreferenceLoss):
        return spec
    if isinstance(spec, str):
        return get_loss(spec)
    if isinstance(spec, dict) or hasattr(spec, "items"):
        spec = dict(spec.items())
        if "class_path" in spec:
            return _from_class_path(spec["class_path"], dict(spec.get("init_args") or {}))
        if "name" not in spec:
            raise LossConfigError(
                f"model.loss: a mapping of settings needs the loss's 'name' (or 'class_path'), got keys "
                f"{sorted(spec)}; settings given as --model.loss.KEY replace a loss given by name alone: write "
                "--model.loss '{name: NAME, KEY: VALUE}'"
            )
        name = spec.pop("name")
        return get_loss(name, **spec)
    raise LossConfigError(f"cannot build a loss from {spec!r}: give a name, a mapping with 'name', or a PreferenceLoss")


def _from_class_path(class_path: str, init_args: dict) -> PreferenceLoss:
    import importlib

    module_name, _, attr = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError):
        raise LossConfigError(f"loss class_path {class_path!r} cannot be imported") from None
    if not (inspect.isclass(cls) and issubclass(cls, PreferenceLoss)):
        raise LossConfigError(f"loss class_path {class_path!r} is not a PreferenceLoss subclass")
    if cls.registry_names:
        return get_loss(cls.registry_names[0], **init_args)
    return cls(**init_args)
