"""Helpers shared by the bench scripts: the evaluation sets."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
EVAL = ROOT / "tests" / "data" / "qa_eval.yaml"
HOLDOUT = ROOT / "tests" / "data" / "qa_holdout.yaml"
# Written with the issue-10 training additions for two known weaknesses (no "docker" in the
# question, other languages): a regression check, optimistic, never used to pick parameters.
PROBES = ROOT / "tests" / "data" / "qa_probes.yaml"


@dataclass(frozen=True)
class QASet:
    """One split: on-topic (question, expected article id), off-topic questions (expect
    the fallback) and uncovered questions (about containers, but no article: expect
    ``uncovered``)."""

    on_topic: list[tuple[str, str]]
    off_topic: list[str]
    uncovered: list[str]


def load_qa(path: Path) -> QASet:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return QASet(
        [(str(item["q"]), str(item["expect"])) for item in data["on_topic"]],
        [str(q) for q in data["off_topic"]],
        [str(q) for q in data.get("uncovered") or []],
    )


def load_set(path: Path) -> tuple[list[tuple[str, str]], list[str]]:
    qa = load_qa(path)
    return qa.on_topic, qa.off_topic
