"""What `preflight losses` prints: every registered loss, plugins included."""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field

from .registry import _REGISTRY, load_entry_points, loss_hyperparameters

ARXIV = re.compile(r"arXiv[:\s]+(\d{4}\.\d{4,5})")


@dataclass
class LossEntry:
    name: str
    aliases: tuple[str, ...]
    hyperparameters: dict[str, str]  # name -> default, as text
    reference: str  # needs a reference, reference-free, or depends on its terms
    takes: str  # what data it takes: pairs of log-probs, pairs of rewards, whole lists
    papers: tuple[str, ...]
    defined_in: str
    #: name -> its ``Args:`` entry (type, meaning, default, range), one line each
    documented: dict[str, str] = field(default_factory=dict)


def loss_catalog() -> list[LossEntry]:
    """One entry per registered class, under its first registered name, sorted by name."""
    load_entry_points()
    entries = []
    for cls in {id(c): c for c in _REGISTRY.values()}.values():
        name, *aliases = cls.registry_names
        params = {
            k: ("(required)" if p.default is inspect.Parameter.empty else repr(p.default))
            for k, p in loss_hyperparameters(cls).items()
            if p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
        }
        papers = tuple(dict.fromkeys(ARXIV.findall(inspect.getdoc(cls) or "")))
        flag = inspect.getattr_static(cls, "requires_reference")
        reference = (
            "depends on its terms" if isinstance(flag, property) else "needs a reference" if flag else "reference-free"
        )
        takes = {
            "logps": "takes pairs",
            "rewards": "takes pairs of rewards (reward models)",
            "lists": "takes lists",
            "reward_lists": "takes lists of rewards (reward models)",
            "unpaired": "takes unpaired completions (prompt, completion, label)",
        }
        entries.append(
            LossEntry(
                name,
                tuple(aliases),
                params,
                reference,
                takes.get(cls.input_kind, f"takes {cls.input_kind}"),
                papers,
                f"{cls.__module__}.{cls.__qualname__}",
                documented_arguments(cls),
            )
        )
    return sorted(entries, key=lambda e: e.name)


def documented_arguments(cls: type) -> dict[str, str]:
    """The entries of the class docstring's ``Args:`` section, by name, each joined onto one line."""
    doc = inspect.getdoc(cls) or ""
    match = re.search(r"^Args:\n((?:[ \t]+\S.*\n?)+)", doc, re.M)
    if not match:
        return {}
    found: dict[str, str] = {}
    name = None
    for line in match.group(1).splitlines():
        entry = re.match(r"^ {4}(\w+)( \(.*?\))?:\s*(.*)$", line)
        if entry:
            name = entry.group(1)
            found[name] = f"{name}{entry.group(2) or ''}: {entry.group(3)}".strip()
        elif name is not None:
            found[name] += " " + line.strip()
    return found


def format_catalog(entries: list[LossEntry]) -> str:
    lines = []
    for e in entries:
        head = e.name + (f" (aliases: {', '.join(e.aliases)})" if e.aliases else "")
        params = ", ".join(f"{k}={v}" for k, v in e.hyperparameters.items()) or "(no hyperparameters)"
        papers = ", ".join(f"arXiv:{p}" for p in e.papers) or "no paper"
        lines.append(f"{head}\n    {params}\n    {e.takes}; {e.reference}; {papers}; {e.defined_in}")
        lines += [f"      {e.documented[k]}" for k in e.hyperparameters if k in e.documented]
    return "\n".join(lines)
