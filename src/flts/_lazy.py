"""Lazy ``"module:attribute"`` imports for the registries (bus backends, model types): an
optional extra is only imported when asked for, and its absence is an install hint."""

from __future__ import annotations

import importlib
from typing import Any

from flts.exceptions import DependencyMissingError


def import_target(target: str, *, package: str | None = None, extra: str | None = None) -> Any:
    """The attribute named by ``target`` (``"module:attribute"``), importing its module.

    A ``ModuleNotFoundError`` for ``package`` (the top-level import that fails without the
    extra) becomes :class:`DependencyMissingError` naming ``extra`` (``"all"`` if none);
    any other import error propagates unchanged.
    """
    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if package and exc.name and exc.name.split(".")[0] == package:
            raise DependencyMissingError(package, extra or "all") from exc
        raise
    return getattr(module, attribute)
