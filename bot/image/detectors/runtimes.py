"""Shared ``yields`` for language runtimes: ``{"name", "version", "path"}``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bot.image.detectors.base import Value


def runtime(name: str) -> Callable[[Value, str], dict[str, Any] | None]:
    def yields(value: Value, path: str) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            return None
        version = value.get("version")
        home = value.get("home")
        return {
            "name": name,
            "version": str(version) if version else None,
            "path": "/" + str(home if home else path),
        }

    return yields
