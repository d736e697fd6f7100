"""Retrieval quality on the evaluation set and the held-out set.

    .venv/bin/python bench/qa_eval.py [--misses]

Prints top-1 accuracy, top-3 recall and the off-topic fallback rate for each set. The
held-out set is never used for tuning; it estimates accuracy on unseen questions.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import EVAL, HOLDOUT, load_set
from bot.knowledge import KnowledgeBase


def evaluate(kb: KnowledgeBase, path: Path, show_misses: bool) -> dict[str, float]:
    on, off = load_set(path)
    top1 = top3 = 0
    for question, expected in on:
        d = kb.decide(question)
        ids = [h.article_id for h in d.hits]
        if d.on_topic and ids[:1] == [expected]:
            top1 += 1
        elif show_misses:
            got = ids[0] if d.on_topic and ids else "FALLBACK"
            print(
                f"  miss: {question!r}: expected {expected}, got {got} "
                f"(cov {d.coverage:.2f}, {[(h.article_id, round(h.score, 2)) for h in d.hits]})"
            )
        if d.on_topic and expected in ids[:3]:
            top3 += 1
    fallback = 0
    for question in off:
        d = kb.decide(question)
        if not d.on_topic:
            fallback += 1
        elif show_misses:
            print(
                f"  off-topic answered: {question!r} -> {d.hits[0].article_id} "
                f"(cov {d.coverage:.2f}, score {d.hits[0].score:.2f})"
            )
    return {
        "on_topic": len(on),
        "top1": top1 / len(on),
        "top3": top3 / len(on),
        "off_topic": len(off),
        "fallback": fallback / len(off),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--misses", action="store_true", help="list every miss")
    args = parser.parse_args()
    kb = KnowledgeBase.load()
    for name, path in (("eval", EVAL), ("holdout", HOLDOUT)):
        if not path.exists():
            continue
        r = evaluate(kb, path, args.misses)
        print(
            f"{name:8} on-topic {int(r['on_topic']):4d}  top-1 {r['top1']:.1%}  "
            f"top-3 {r['top3']:.1%}   off-topic {int(r['off_topic']):3d}  "
            f"fallback {r['fallback']:.1%}"
        )


if __name__ == "__main__":
    main()
