"""The user's own modules that a command imports when told to (``--imports``): the only code a command runs that
is not preflight's or its dependencies'."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path


def import_user_modules(names: list[str] | None) -> None:
    """Import the modules a user named (``my_losses`` or ``path/to/my_losses.py``): their decorators run."""
    for name in names or ():
        try:
            if name.endswith(".py"):
                path = Path(name)
                if not path.is_file():
                    raise ValueError(f"imports: {name}: file not found")
                spec = importlib.util.spec_from_file_location(path.stem, path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[path.stem] = module
                spec.loader.exec_module(module)
            else:
                importlib.import_module(name)
        except ModuleNotFoundError as err:
            raise ValueError(f"imports: cannot import {name!r} ({err})") from None
