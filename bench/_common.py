"""Helpers shared by the bench scripts: the evaluation sets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
EVAL = ROOT / "tests" / "data" / "qa_eval.yaml"
HOLDOUT = ROOT / "tests" / "data" / "qa_holdout.yaml"


def load_set(path: Path) -> tuple[list[tuple[str, str]], list[str]]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    on = [(str(item["q"]), str(item["expect"])) for item in data["on_topic"]]
    off = [str(q) for q in data["off_topic"]]
    return on, off
