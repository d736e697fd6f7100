"""Shared ``yields`` for package databases: a count -> ``{"manager", "count", "database"}``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bot.image.detectors.base import Value


def count_of(manager: str) -> Callable[[Value, str], dict[str, Any]]:
    def yields(value: Value, path: str) -> dict[str, Any]:
        count = value if isinstance(value, int) and not isinstance(value, bool) else None
        return {"manager": manager, "count": count, "database": "/" + path}

    return yields
