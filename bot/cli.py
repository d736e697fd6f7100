"""The ``dockwise`` command line (typer). Interfaces here are contracts other tools use."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Coroutine
from typing import Annotated, Any, Literal, NoReturn, cast

import typer

from bot.engine import Engine, check_input
from bot.errors import DockwiseError, InvalidInput
from bot.reply import Reply, ReplyKind

app = typer.Typer(
    name="dockwise",
    help="A teammate that unblocks people learning containers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def fail(message: str, code: int = 1) -> NoReturn:
    """One clear line on stderr and a non-zero exit: never a traceback."""
    first = message.strip().splitlines()[0] if message.strip() else "unknown error"
    typer.echo(f"dockwise: error: {first}", err=True)
    raise typer.Exit(code)


def answer_json(reply: Reply) -> dict[str, Any]:
    """The ``ask --json`` contract: kind ("answer", "uncovered", "fallback" or "error"),
    topic, title, text (the targeted reply), sources (URLs), related (article ids; for
    "uncovered" the maybe-related ones), article (the whole article's Markdown, or null)
    and section (the heading of the section shown, or null)."""
    return {
        "kind": str(reply.kind),
        "topic": reply.topic,
        "title": reply.title,
        "text": reply.body,
        "sources": [s.url for s in reply.sources],
        "related": list(reply.related),
        "article": reply.article,
        "section": reply.section,
    }


def _print_json(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")


def _run_or_fail(work: Coroutine[Any, Any, Reply]) -> Reply:
    """Run ``work``; a DockwiseError becomes one line on stderr and exit 1."""
    try:
        return asyncio.run(work)
    except DockwiseError as exc:
        fail(str(exc))


def _print_reply_data(reply: Reply, as_json: bool) -> None:
    """``--json``: the reply's structured payload; otherwise the terminal rendering."""
    from adapters.terminal import render_text

    if as_json:
        _print_json(reply.data or {})
    else:
        typer.echo(render_text(reply, color=sys.stdout.isatty()))


def _load_engine() -> Engine:
    try:
        return Engine()
    except (OSError, ValueError) as exc:
        fail(f"cannot load the knowledge base: {exc}")


async def _answer(engine: Engine, text: str, full: bool) -> Reply:
    """The engine's reply to ``text`` (as chat gets it); with ``full``, an answer becomes
    its whole article."""
    reply = await engine.handle(text)
    if full and reply.kind is ReplyKind.ANSWER and reply.topic is not None:
        return engine.full_article(reply.topic)
    return reply


def _print_answer(reply: Reply, question: str, *, full: bool, color: bool) -> None:
    from adapters.terminal import render_text

    typer.echo(render_text(reply, color=color))
    if reply.topic is not None and not full and reply.article is not None:
        typer.echo(f"\nFull article: dockwise ask --full {json.dumps(question)}")


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help='The question, or "-" to read one per line.')],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    full: Annotated[
        bool, typer.Option("--full", help="Print the whole article, not the short answer.")
    ] = False,
) -> None:
    """Answer a question about containers, or explain an image ("explain nginx"): the same
    engine path as chat, so the CLI, the shell and chat give the same reply."""

    engine = _load_engine()
    if question == "-":
        runner = asyncio.Runner()
        for line in sys.stdin:
            text = line.rstrip("\n")
            try:
                reply = runner.run(_answer(engine, check_input(text), full))
            except DockwiseError as exc:
                if as_json:
                    _print_json(
                        {
                            "kind": "error",
                            "topic": None,
                            "title": "Invalid question",
                            "text": str(exc),
                            "sources": [],
                            "related": [],
                            "article": None,
                            "section": None,
                        }
                    )
                else:
                    typer.echo(f"dockwise: error: {exc}", err=True)
                continue
            if as_json:
                _print_json(answer_json(reply))
            else:
                _print_answer(reply, text, full=full, color=False)
                typer.echo("")
            sys.stdout.flush()
        runner.run(engine.aclose())
        runner.close()
        return
    try:
        cleaned = check_input(question)
    except DockwiseError as exc:
        fail(str(exc), code=2)

    async def answer() -> Reply:  # the same path as chat: questions and "explain IMAGE"
        try:
            return await _answer(engine, cleaned, full)
        finally:
            await engine.aclose()

    reply = asyncio.run(answer())
    if as_json:
        _print_json(answer_json(reply))
        if reply.kind is ReplyKind.ERROR:
            raise typer.Exit(1)
    elif reply.kind is ReplyKind.ERROR:  # e.g. "explain IMAGE" for a missing image
        fail(reply.body)
    else:
        _print_answer(reply, question, full=full, color=sys.stdout.isatty())


@app.command()
def topics() -> None:
    """List the articles dockwise knows."""
    engine = _load_engine()
    width = max(len(a) for a in engine.knowledge.articles)
    for article in engine.knowledge.articles.values():
        typer.echo(f"{article.id:{width}}  {article.title}")


@app.command()
def chat() -> None:
    """Chat in this terminal (the shell adapter)."""
    from adapters.shell import run_shell
    from bot.config import get_settings

    engine = _load_engine()
    history = get_settings().cache_dir / "chat_history"
    raise typer.Exit(run_shell(engine, history_file=history, color=sys.stdout.isatty()))


@app.command()
def explain(
    image: Annotated[str, typer.Argument(help="Image reference, e.g. python:3.12-slim")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the facts as JSON.")] = False,
    source: Annotated[
        str, typer.Option(help="Where to read the image: auto, registry or docker.")
    ] = "auto",
    platform: Annotated[
        str | None, typer.Option(help="Platform to pick from a multi-platform image, os/arch.")
    ] = None,
) -> None:
    """Inspect an image and explain what it carries."""
    from adapters.terminal import render_text
    from bot.image.explain import Explainer
    from bot.image.render import render_reply
    from bot.image.source import Platform

    if source not in ("auto", "registry", "docker"):
        fail(f"invalid --source {source!r}: choose auto, registry or docker", code=2)
    try:
        chosen = Platform.parse(platform) if platform else None
        ref = check_input(image)
    except (ValueError, DockwiseError) as exc:
        fail(str(exc), code=2)

    async def run() -> Any:
        explainer = Explainer()
        try:
            kind = cast(Literal["auto", "registry", "docker"], source)
            return await explainer.facts(ref, source=kind, platform=chosen)
        finally:
            await explainer.aclose()

    try:
        facts = asyncio.run(run())
    except DockwiseError as exc:
        fail(str(exc))
    if as_json:
        _print_json(facts.to_json())
    else:
        typer.echo(render_text(render_reply(facts), color=sys.stdout.isatty()))


def _source_and_platform(source: str, platform: str | None) -> Any:
    from bot.image.source import Platform

    if source not in ("auto", "registry", "docker"):
        fail(f"invalid --source {source!r}: choose auto, registry or docker", code=2)
    try:
        return Platform.parse(platform) if platform else None
    except ValueError as exc:
        fail(str(exc), code=2)


def _read_dockerfile(path: str) -> str:
    """The file (or stdin for ``-``), at most 64 KB of UTF-8 text; else one line, exit 2."""
    from bot.dockerfile_explain import MAX_DOCKERFILE_BYTES, decode_dockerfile

    try:
        if path == "-":
            data = sys.stdin.buffer.read(MAX_DOCKERFILE_BYTES + 1)
        else:
            with open(path, "rb") as handle:
                data = handle.read(MAX_DOCKERFILE_BYTES + 1)
    except IsADirectoryError:
        fail(f"{path} is a directory; give the Dockerfile's path", code=2)
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror or exc}", code=2)
    try:
        return decode_dockerfile(data)
    except DockwiseError as exc:
        fail(str(exc), code=2)


@app.command()
def dockerfile(
    path: Annotated[str, typer.Argument(help='The Dockerfile, or "-" to read it from stdin.')],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print {stages, findings, final_stage} as JSON.")
    ] = False,
    source: Annotated[
        str, typer.Option(help="Where to inspect base images: auto, registry or docker.")
    ] = "auto",
    inspect: Annotated[
        bool, typer.Option(help="Inspect the base images (--no-inspect: the file alone).")
    ] = True,
) -> None:
    """Explain a Dockerfile: stages, the final image, and findings (hadolint + dockwise)."""
    from bot.dockerfile_explain import explain_dockerfile, parse_dockerfile
    from bot.image.explain import Explainer
    from bot.image.facts import ImageFacts
    from bot.image.source import Platform

    _source_and_platform(source, None)
    text = _read_dockerfile(path)
    try:
        parse_dockerfile(text)  # unparsable: one line, exit 2, before any network
    except DockwiseError as exc:
        fail(str(exc), code=2)

    async def run() -> Reply:
        explainer = Explainer() if inspect else None
        kind = cast(Literal["auto", "registry", "docker"], source)

        async def facts_for(ref: str, platform: str | None) -> ImageFacts:
            assert explainer is not None
            try:
                chosen = Platform.parse(platform) if platform else None
            except ValueError as exc:
                raise InvalidInput(str(exc)) from None
            return await explainer.facts(ref, source=kind, platform=chosen)

        try:
            return await explain_dockerfile(text, facts_for=facts_for if inspect else None)
        finally:
            if explainer is not None:
                await explainer.aclose()

    _print_reply_data(_run_or_fail(run()), as_json)


@app.command()
def compare(
    image_a: Annotated[str, typer.Argument(metavar="A", help="First image, e.g. debian:12")],
    image_b: Annotated[str, typer.Argument(metavar="B", help="Second image, e.g. debian:12-slim")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the comparison as JSON.")] = False,
    source: Annotated[
        str, typer.Option(help="Where to read the images: auto, registry or docker.")
    ] = "auto",
    platform: Annotated[
        str | None, typer.Option(help="Platform to pick from multi-platform images, os/arch.")
    ] = None,
) -> None:
    """Compare two images side by side: user space, packages, sizes, shared layers."""
    from bot.image.compare import compare_images
    from bot.image.explain import Explainer

    chosen = _source_and_platform(source, platform)
    try:
        ref_a, ref_b = check_input(image_a), check_input(image_b)
    except DockwiseError as exc:
        fail(str(exc), code=2)

    async def run() -> Reply:
        explainer = Explainer()
        try:
            kind = cast(Literal["auto", "registry", "docker"], source)
            return await compare_images(explainer, ref_a, ref_b, source=kind, platform=chosen)
        finally:
            await explainer.aclose()

    _print_reply_data(_run_or_fail(run()), as_json)


@app.command()
def serve(
    role: Annotated[
        str,
        typer.Option(
            "--role",
            envvar="DOCKWISE_ROLE",
            help="all (one process, the default), web (HTTP endpoints), gateway (long-lived "
            "chat connections) or worker (runs queued explanations); all but "
            "`all` need DOCKWISE_REDIS_URL.",
        ),
    ] = "all",
) -> None:
    """Run every adapter whose credentials are set, with /healthz, /readyz and /metrics."""
    from bot.chat import ROLES
    from bot.config import get_settings
    from bot.observability import configure_logging, register_secrets_from
    from bot.serve import check_role
    from bot.serve import serve as run_serve

    settings = get_settings()
    try:
        chosen = check_role(role, settings)
    except DockwiseError as exc:
        fail(str(exc), code=2)
    assert chosen in ROLES
    configure_logging(os.environ.get("DOCKWISE_LOG_LEVEL", "INFO"))
    register_secrets_from(settings)
    try:
        asyncio.run(run_serve(settings, role=chosen))
    except DockwiseError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


@app.command()
def run() -> None:
    """Serve every configured chat platform; with none configured, chat in this terminal."""
    from bot.chat import configured_adapters
    from bot.config import get_settings

    if configured_adapters(get_settings()):
        serve()
    else:
        typer.echo("No chat platform is configured: starting the shell adapter.", err=True)
        chat()


@app.command("config")
def show_config() -> None:
    """Print the effective settings, secrets masked."""
    from bot.chat import adapters
    from bot.config import Settings, get_settings, masked_settings

    shared = get_settings()
    for name, value in shared.masked().items():
        typer.echo(f"{name} = {value}")
    for adapter in adapters().values():  # each platform's own settings
        if adapter.settings_model is Settings:
            continue
        for name, value in masked_settings(adapter.load_settings(shared)).items():
            typer.echo(f"{name} = {value}")


def add_platform_commands(argv: list[str]) -> None:
    """Add the registered chat adapters' own commands (``ChatAdapter.register_cli``) to
    ``app``, unless ``argv`` (the arguments after the program name) names one of the
    commands above: those run without importing any chat SDK."""
    own = {
        command.name or (command.callback.__name__.replace("_", "-") if command.callback else "")
        for command in app.registered_commands
    }
    first = next((arg for arg in argv if not arg.startswith("-")), None)
    if first is not None and first in own:
        return
    from bot.chat import register_cli_commands

    register_cli_commands(app)


def main() -> None:
    """Console entry point: user errors are one line; bugs too, unless DOCKWISE_DEBUG=1."""
    from pydantic import ValidationError

    from bot.observability import configure_logging

    # Logs go to stderr; one-shot commands only show warnings, `serve` shows more.
    configure_logging(os.environ.get("DOCKWISE_LOG_LEVEL", "WARNING"))
    try:
        add_platform_commands(sys.argv[1:])
        app()
    except DockwiseError as exc:
        typer.echo(f"dockwise: error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except ValidationError as exc:  # a setting that does not parse: name it, one line
        problems = exc.errors()
        where = ".".join(str(p) for p in problems[0]["loc"]) if problems else ""
        what = problems[0]["msg"] if problems else str(exc).splitlines()[0]
        typer.echo(f"dockwise: error: {where or 'a setting'}: {what}", err=True)
        sys.exit(1)
    except Exception as exc:  # a bug: say so in one line, keep tracebacks for debugging
        if os.environ.get("DOCKWISE_DEBUG"):
            raise
        typer.echo(f"dockwise: internal error: {type(exc).__name__}: {exc}", err=True)
        sys.exit(70)
