"""Command-line flags generated from a settings dataclass: one ``--field-name`` per field, its help the field's
``Args:`` entry in the class docstring, so the flags, their help and the settings cannot drift apart."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import typing
from typing import Any

from ..errors import PreflightConfigError

WORDS = {int: "whole numbers", float: "numbers", str: "names"}


def documented_fields(cls: type) -> dict[str, str]:
    """Each field's text in the ``Args:`` section of the class docstring (continuation lines joined)."""
    doc = inspect.getdoc(cls) or ""
    section = doc.split("Args:", 1)[1] if "Args:" in doc else ""
    found: dict[str, str] = {}
    name = None
    for line in section.splitlines():
        match = re.match(r"^    (\w+): (.*)", line)
        if match:
            name, found[match.group(1)] = match.group(1), match.group(2).strip()
        elif name and line.startswith("        "):
            found[name] += " " + line.strip()
        elif line.strip() and not line.startswith(" "):
            break
    return found


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _plain(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def add_settings_arguments(
    parser: argparse.ArgumentParser, cls: type, *, quick: Any = None, skip: tuple[str, ...] = ()
) -> None:
    """A flag for every field of `cls` whose type is a number, a string, a bool or a tuple of those; the default
    shown is the class's (and `quick`'s, where it differs). A flag left out keeps the settings' value."""
    hints, docs, default = typing.get_type_hints(cls), documented_fields(cls), cls()
    for field in dataclasses.fields(cls):
        kind = hints[field.name]
        if field.name in skip or dataclasses.is_dataclass(kind):
            continue
        value = getattr(default, field.name)
        shown = f"default {_plain(value)}"
        if quick is not None and getattr(quick, field.name) != value:
            shown += f"; --quick: {_plain(getattr(quick, field.name))}"
        help_text = f"{docs.get(field.name, field.name).rstrip('.')} ({shown})"
        if kind is bool:
            parser.add_argument(flag(field.name), action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif typing.get_origin(kind) is tuple:
            parser.add_argument(flag(field.name), default=None, help=f"{help_text[:-1]}; comma-separated)")
        else:
            parser.add_argument(flag(field.name), type=kind, default=None, help=help_text)


def settings_from(ns: argparse.Namespace, base: Any, skip: tuple[str, ...] = ()) -> Any:
    """`base` with every field the command line set (comma-separated lists parsed into tuples of their type)."""
    hints, changes = typing.get_type_hints(type(base)), {}
    for field in dataclasses.fields(base):
        value = getattr(ns, field.name, None)
        if field.name in skip or value is None:
            continue
        kind = hints[field.name]
        if typing.get_origin(kind) is tuple:
            item = typing.get_args(kind)[0]
            try:
                value = tuple(item(part.strip()) for part in value.split(",") if part.strip())
            except ValueError:
                raise PreflightConfigError(
                    f"{flag(field.name)} {value!r}: give {WORDS.get(item, 'values')} separated by commas"
                ) from None
        changes[field.name] = value
    return dataclasses.replace(base, **changes)
