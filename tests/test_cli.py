"""The `dockwise` CLI contract, run as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.knowledge import KnowledgeBase
from tests.fixtures.router import seed_router

ROOT = Path(__file__).resolve().parent.parent


def dockwise(
    *args: str, stdin: str | None = None, tmp: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if tmp is not None:
        env["DOCKWISE_CACHE_DIR"] = str(tmp)
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )


@pytest.fixture(scope="module")
def kb() -> KnowledgeBase:
    return KnowledgeBase.load()


def test_ask_json_contract(kb: KnowledgeBase) -> None:
    result = dockwise("ask", "--json", "is a container a VM?")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    obj = json.loads(lines[0])
    assert set(obj) == {
        "kind", "topic", "title", "text", "sources", "related", "article", "section"
    }  # fmt: skip
    assert obj["kind"] == "answer" and obj["topic"] == "containers-vs-vms"
    article = kb.articles["containers-vs-vms"]
    assert obj["title"] == article.title and obj["article"] == article.body
    # The text is the targeted reply: the lead plus the one section named in "section".
    headings = [s.heading for s in article.sections]
    assert obj["section"] in headings
    shown = article.sections[headings.index(obj["section"])]
    assert obj["text"].startswith(article.lead) and obj["text"].endswith(shown.text)
    assert len(obj["text"].split()) <= 200 < len(article.body.split()) or len(headings) == 1
    assert obj["sources"] == [s.url for s in article.sources]
    assert all(url.startswith("https://") for url in obj["sources"])
    assert obj["related"] and set(obj["related"]) <= set(kb.articles)


def test_ask_full_prints_the_whole_article(kb: KnowledgeBase) -> None:
    obj = json.loads(dockwise("ask", "--json", "--full", "is a container a VM?").stdout)
    article = kb.articles["containers-vs-vms"]
    assert obj["kind"] == "answer" and obj["section"] is None
    for section in article.sections:
        assert section.heading in obj["text"] and section.text in obj["text"]
    text = dockwise("ask", "--full", "is a container a VM?").stdout
    assert all(s.heading in text for s in article.sections)
    assert "dockwise ask --full" not in text  # already the full article


def test_ask_json_uncovered_says_so_with_a_docs_search_and_maybe_related(
    kb: KnowledgeBase,
) -> None:
    obj = json.loads(
        dockwise("ask", "--json", "how do I configure a kubernetes ingress controller").stdout
    )
    assert obj["kind"] == "uncovered" and obj["topic"] is None and obj["article"] is None
    assert obj["sources"][0].startswith("https://docs.docker.com/search/?q=")
    assert "kubernetes" in obj["sources"][0]
    assert 1 <= len(obj["related"]) <= 3 and set(obj["related"]) <= set(kb.articles)
    assert "don't cover" in obj["text"]


def test_ask_text_prints_title_and_sources(kb: KnowledgeBase) -> None:
    result = dockwise("ask", "why FROM ubuntu?")
    assert result.returncode == 0
    article = kb.articles["why-base-image"]
    assert result.stdout.startswith(article.title)
    assert article.sources[0].url in result.stdout


def test_batch_mode_answers_each_line_in_order(kb: KnowledgeBase) -> None:
    questions = [
        "why FROM ubuntu?",
        "what's the weather in Paris?",
        "alpine or slim?",
        "",
        "CMD vs ENTRYPOINT?",
    ]
    result = dockwise("ask", "--json", "-", stdin="\n".join(questions) + "\n")
    assert result.returncode == 0, result.stderr
    objs = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(objs) == len(questions)
    for question, obj in zip(questions, objs, strict=True):
        if not question:
            assert obj["kind"] == "error"
            continue
        single = kb.answer(question)
        assert obj["kind"] == str(single.kind) and obj["topic"] == single.topic


@pytest.mark.parametrize("text", ["", "   ", "q" * 4001])
def test_bad_input_is_one_clear_line(text: str) -> None:
    result = dockwise("ask", "--json", text)
    assert result.returncode == 2
    assert result.stdout == ""
    err = result.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dockwise: error:")
    assert "Traceback" not in result.stderr


def test_topics_lists_every_article(kb: KnowledgeBase) -> None:
    result = dockwise("topics")
    assert result.returncode == 0
    listed = [line.split()[0] for line in result.stdout.splitlines()]
    assert listed == sorted(kb.articles)


def _env_for(registry_host: str, tmp: Path) -> dict[str, str]:
    cache = str(seed_router(tmp))
    return {"DOCKWISE_INSECURE_REGISTRIES": registry_host, "DOCKWISE_CACHE_DIR": cache}


def _run(args: list[str], env: dict[str, str], stdin: str | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "bot", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **env},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_ask_explain_goes_through_the_engine_like_chat_and_the_shell(
    registry: object, tmp_path: Path
) -> None:
    from tests.fixtures.registry import RegistryServer, make_layer, push_image

    assert isinstance(registry, RegistryServer)
    os_release = b'PRETTY_NAME="Alpine Linux v3.20"\nID=alpine\nVERSION_ID=3.20.0\n'
    push_image(registry.pusher(), "demo/cli", "v1", [make_layer({"etc/os-release": os_release})])
    reference = f"{registry.host}/demo/cli:v1"
    env = _env_for(registry.host, tmp_path)
    for text in (f"explain {reference}", "is a container a VM?"):
        answer = _run(["ask", text], env).strip()
        shell = _run(["chat"], env, stdin=f"{text}\nquit\n")
        # The same reply, rendered the same way; each then says how to get the whole
        # article in its own terms (`ask --full` / `more`).
        reply, _, pointer = answer.partition("\n\nFull article: ")
        assert reply and reply in shell
        if pointer:
            assert pointer == f"dockwise ask --full {json.dumps(text)}"
            assert "(type `more` for the whole article)" in shell
    as_json = json.loads(_run(["ask", "--json", f"explain {reference}"], env))
    assert as_json["kind"] == "image"
    assert "Alpine" in as_json["title"] + as_json["text"]


def test_ask_explain_failure_is_one_line_and_non_zero() -> None:
    result = dockwise("ask", "explain 127.0.0.1:1/nothing:1")
    assert result.returncode == 1
    assert result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("dockwise: error: ")
