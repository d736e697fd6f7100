"""Section-pick accuracy: does the reply show the section that answers the question?

    .venv/bin/python bench/qa_sections.py [--misses]

Reads tests/data/qa_sections.yaml (questions labelled with their article and the section
that answers them; written for this bench, not used for training) and prints how often
``Router.best_section(question, article)`` picks the labelled section, given the right
article, overall and per article.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import ROOT
from bot.knowledge import KnowledgeBase

SECTIONS = ROOT / "tests" / "data" / "qa_sections.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--misses", action="store_true", help="list every wrong pick")
    args = parser.parse_args()
    kb = KnowledgeBase.load()
    items = yaml.safe_load(SECTIONS.read_text(encoding="utf-8"))
    right: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for item in items:
        article = kb.articles[item["article"]]
        picked = kb.router.best_section(item["q"], article.id)
        got = article.sections[picked].heading if picked is not None else None
        total[article.id] += 1
        if got == item["section"]:
            right[article.id] += 1
        elif args.misses:
            print(f"  miss: {item['q']!r} [{article.id}]: want {item['section']!r}, got {got!r}")
    n, ok = sum(total.values()), sum(right.values())
    print(f"sections: {ok}/{n} right = {ok / n:.1%} (chance {_chance(kb, items):.1%})")
    worst = sorted(total, key=lambda a: right[a] / total[a])[:5]
    print("  weakest: " + ", ".join(f"{a} {right[a]}/{total[a]}" for a in worst))


def _chance(kb: KnowledgeBase, items: list[dict[str, str]]) -> float:
    return sum(1 / len(kb.articles[i["article"]].sections) for i in items) / len(items)


if __name__ == "__main__":
    main()
