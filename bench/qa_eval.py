"""Routing quality on the evaluation split and the held-out split.

    .venv/bin/python bench/qa_eval.py [--misses] [--split eval|holdout|probes|both]

For each split: top-1 (the right article, answered), top-3 (the right article among the
three nearest), off-topic fallback rate, uncovered rate (container questions no article
covers that got ``uncovered``), and the most frequent wrong pairs (expected -> got).
The held-out split is never used to choose a parameter (bench/qa_tune.py reads only the
evaluation split); ``--misses`` lists every miss of the evaluation and probe splits only,
so the held-out questions are never read one by one while tuning. The probe split
(tests/data/qa_probes.yaml: questions without "docker" and in other languages) was written
together with training questions for those weaknesses, so its figures are optimistic.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import EVAL, HOLDOUT, PROBES, QASet, load_qa
from bot.knowledge import KnowledgeBase
from bot.retrieval import Outcome


def evaluate(kb: KnowledgeBase, qa: QASet, show_misses: bool) -> dict[str, object]:
    top1 = top3 = 0
    wrong: Counter[tuple[str, str]] = Counter()
    for question, expected in qa.on_topic:
        d = kb.decide(question)
        ids = [h.article_id for h in d.hits]
        got = ids[0] if d.outcome is Outcome.ANSWER else str(d.outcome)
        if got == expected:
            top1 += 1
        else:
            wrong[(expected, got)] += 1
            if show_misses:
                print(f"  miss: {question!r}: expected {expected}, got {got} ({_why(d)})")
        if expected in ids[:3]:
            top3 += 1
    fallback = 0
    for question in qa.off_topic:
        d = kb.decide(question)
        if d.outcome is Outcome.FALLBACK:
            fallback += 1
        else:
            wrong[("(off-topic)", _got(d))] += 1
            if show_misses:
                print(f"  off-topic not refused: {question!r} -> {_got(d)} ({_why(d)})")
    uncovered = 0
    for question in qa.uncovered:
        d = kb.decide(question)
        if d.outcome is Outcome.UNCOVERED:
            uncovered += 1
        else:
            wrong[("(uncovered)", _got(d))] += 1
            if show_misses:
                print(f"  uncovered not said: {question!r} -> {_got(d)} ({_why(d)})")
    return {
        "on_topic": len(qa.on_topic),
        "top1": top1 / max(1, len(qa.on_topic)),
        "top3": top3 / max(1, len(qa.on_topic)),
        "off_topic": len(qa.off_topic),
        "fallback": fallback / max(1, len(qa.off_topic)),
        "uncovered_n": len(qa.uncovered),
        "uncovered": uncovered / max(1, len(qa.uncovered)),
        "wrong": wrong,
    }


def _got(d: object) -> str:
    from bot.retrieval import Decision

    assert isinstance(d, Decision)
    return d.hits[0].article_id if d.outcome is Outcome.ANSWER and d.hits else str(d.outcome)


def _why(d: object) -> str:
    from bot.retrieval import Decision

    assert isinstance(d, Decision)
    near = ", ".join(f"{h.article_id} {h.score:.2f}" for h in d.hits)
    return f"domain {d.domain:.2f}; {near}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--misses", action="store_true", help="list misses (eval, probes)")
    parser.add_argument("--split", choices=["eval", "holdout", "probes", "both"], default="both")
    args = parser.parse_args()
    kb = KnowledgeBase.load()
    splits = [("eval", EVAL), ("holdout", HOLDOUT), ("probes", PROBES)]
    for name, path in splits:
        if args.split not in (name, "both") or not path.exists():
            continue
        r = evaluate(kb, load_qa(path), args.misses and name != "holdout")
        print(
            f"{name:8} on-topic {r['on_topic']:4d}  top-1 {r['top1']:.1%}  "
            f"top-3 {r['top3']:.1%}   off-topic {r['off_topic']:3d}  "
            f"fallback {r['fallback']:.1%}   uncovered {r['uncovered_n']:3d}  "
            f"said {r['uncovered']:.1%}"
        )
        wrong = r["wrong"]
        assert isinstance(wrong, Counter)
        top = ", ".join(f"{e} -> {g} x{n}" for (e, g), n in wrong.most_common(6))
        print(f"         most frequent wrong pairs: {top or 'none'}")


if __name__ == "__main__":
    main()
