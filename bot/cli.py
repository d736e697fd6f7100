"""The ``dockwise`` command line (typer). Interfaces here are contracts other tools use."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Annotated, Any, Literal, NoReturn, cast

import typer

from bot.engine import Engine, check_input
from bot.errors import DockwiseError
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
    """The ``ask --json`` contract: kind, topic, title, text, sources (URLs), related."""
    return {
        "kind": str(reply.kind),
        "topic": reply.topic,
        "title": reply.title,
        "text": reply.body,
        "sources": [s.url for s in reply.sources],
        "related": list(reply.related),
    }


def _print_json(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")


def _load_engine() -> Engine:
    try:
        return Engine()
    except (OSError, ValueError) as exc:
        fail(f"cannot load the knowledge base: {exc}")


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help='The question, or "-" to read one per line.')],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Answer a question about containers, or explain an image ("explain nginx"): the same
    engine path as chat, so the CLI, the shell and chat give the same reply."""
    from adapters.terminal import render_text

    engine = _load_engine()
    if question == "-":
        runner = asyncio.Runner()
        for line in sys.stdin:
            text = line.rstrip("\n")
            try:
                reply = runner.run(engine.handle(check_input(text)))
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
                        }
                    )
                else:
                    typer.echo(f"dockwise: error: {exc}", err=True)
                continue
            if as_json:
                _print_json(answer_json(reply))
            else:
                typer.echo(render_text(reply) + "\n")
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
            return await engine.handle(cleaned)
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
        typer.echo(render_text(reply, color=sys.stdout.isatty()))


@app.command()
def topics() -> None:
    """List the articles dockwise knows."""
    engine = _load_engine()
    for article in engine.knowledge.articles.values():
        typer.echo(f"{article.id:22} {article.title}")


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


@app.command()
def serve() -> None:
    """Run every adapter whose credentials are set, with /healthz, /readyz and /metrics."""
    from bot.config import get_settings
    from bot.observability import configure_logging, register_secrets_from
    from bot.serve import serve as run_serve

    settings = get_settings()
    configure_logging(os.environ.get("DOCKWISE_LOG_LEVEL", "INFO"))
    register_secrets_from(settings)
    try:
        asyncio.run(run_serve(settings))
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
    from pydantic import SecretStr

    from bot.chat import adapters
    from bot.config import Settings, get_settings

    for name, value in get_settings().masked().items():
        typer.echo(f"{name} = {value}")
    for adapter in adapters().values():  # platforms with settings of their own
        if adapter.settings_model is Settings:
            continue
        own = adapter.settings_model()
        for field_name, field in type(own).model_fields.items():
            alias = field.validation_alias
            key = alias if isinstance(alias, str) else field_name.upper()
            value = getattr(own, field_name)
            shown = "***" if isinstance(value, SecretStr) else ("" if value is None else value)
            typer.echo(f"{key} = {shown}")


@app.command("discord-invite")
def discord_invite(
    application_id: Annotated[
        int | None, typer.Option(help="The Discord application id (asked from Discord if unset).")
    ] = None,
) -> None:
    """Print the OAuth2 URL that adds the bot to a Discord server."""
    from adapters.discord import fetch_application_id, invite_url
    from bot.config import get_settings

    if application_id is None:
        settings = get_settings()
        if settings.discord_token is None:
            fail("set DISCORD_TOKEN or pass --application-id", code=2)
        try:
            application_id = asyncio.run(fetch_application_id(settings))
        except DockwiseError as exc:
            fail(str(exc))
    typer.echo(invite_url(application_id))


def main() -> None:
    """Console entry point: user errors are one line; bugs too, unless DOCKWISE_DEBUG=1."""
    from bot.observability import configure_logging

    # Logs go to stderr; one-shot commands only show warnings, `serve` shows more.
    configure_logging(os.environ.get("DOCKWISE_LOG_LEVEL", "WARNING"))
    try:
        app()
    except DockwiseError as exc:
        typer.echo(f"dockwise: error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # a bug: say so in one line, keep tracebacks for debugging
        if os.environ.get("DOCKWISE_DEBUG"):
            raise
        typer.echo(f"dockwise: internal error: {type(exc).__name__}: {exc}", err=True)
        sys.exit(70)
