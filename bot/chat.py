"""The contract every chat platform adapter follows, and the registry that finds them.

An adapter (modelled on errbot's ``backends/base.py``: one module per platform) is a
``ChatAdapter`` subclass in its own module under ``adapters/``, listed by one line in
``adapters.PLATFORMS``. It declares:

- ``name``: the platform's name (``Asker.platform``, log fields, ``/readyz`` checks);
- ``settings_model``: the pydantic-settings class holding its settings (environment
  variables); ``bot.config.Settings`` by default, or the adapter's own class, so a new
  platform adds its variables without touching ``bot/config.py``;
- ``configured(settings)``: whether its settings are complete (``serve`` runs every adapter
  whose settings are complete; ``run`` falls back to the shell when none is);
- ``how_to_configure``: one line naming the variables to set;
- ``render(reply)``: the reply as the platform's message payloads, each within the
  platform's limits (buttons from ``Reply.actions`` included);
- ``setup(web_app)`` (check credentials, add HTTP routes before the server starts),
  ``run()`` (serve until cancelled), ``ready()`` and ``stop()``;
- ``role``: which part of the bot this process is (``dockwise serve --role``), set by
  ``serve`` before ``setup``: ``"all"`` (everything in one process, the default), ``"web"``
  (only the HTTP endpoints a platform calls: events, interactions), ``"gateway"``
  (only long-lived connections a platform keeps open: websockets) or ``"worker"``
  (no listener: the adapter only posts results). ``setup``/``run`` consult it;
- optionally ``deliver(target, reply)`` and ``show_progress(target, line)``: post a
  finished explanation (or a progress line) to a ``target`` the adapter described earlier
  (a JSON-ready dict: a webhook URL, an interaction token) from any process, e.g. a job
  worker (``bot.jobs.Delivery``); ``max_progress_updates`` caps the progress lines one
  target gets (None: no cap), ``progress_updates(target)`` the cap of one kind of target;
- optionally ``register_cli(app)``: commands of its own added to the ``dockwise`` CLI
  (typer), e.g. a command printing the URL that installs the bot.

Fields of ``settings_model`` typed ``SecretStr`` are secrets: ``dockwise config`` shows them
as ``***`` and logs mask their values (``secret_env_vars``).

``bot/`` never imports a platform SDK: ``adapters()`` imports the modules by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic_settings import BaseSettings

from bot.config import Settings, secret_env_names

if TYPE_CHECKING:
    import typer
    from aiohttp import web

    from bot.engine import Engine
    from bot.reply import Reply


#: The ``dockwise serve --role`` values.
Role = Literal["all", "web", "worker", "gateway"]
ROLES: tuple[Role, ...] = ("all", "web", "worker", "gateway")


class ChatAdapter(ABC):
    """One chat platform. Subclasses set ``name`` and ``how_to_configure`` and implement
    ``configured``, ``render`` and ``run``."""

    name: ClassVar[str]
    how_to_configure: ClassVar[str]
    settings_model: ClassVar[type[BaseSettings]] = Settings
    role: Role = "all"
    #: Progress lines ``show_progress`` may show one delivery target (None: no cap).
    max_progress_updates: int | None = None

    def __init__(self, engine: Engine, settings: Any) -> None:
        self.engine = engine
        self.settings = settings
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def load_settings(cls, shared: Settings) -> BaseSettings:
        """This adapter's settings: ``shared`` when it uses ``bot.config.Settings``, else its
        own ``settings_model`` read from the environment (and ``.env``)."""
        if cls.settings_model is Settings:
            return shared
        return cls.settings_model()

    @classmethod
    @abstractmethod
    def configured(cls, settings: Any) -> bool:
        """Whether ``settings`` (an instance of ``settings_model``) are complete."""

    @abstractmethod
    def render(self, reply: Reply) -> list[dict[str, Any]]:
        """``reply`` as this platform's message payloads (JSON-ready), in order."""

    @classmethod  # noqa: B027 - optional hook
    def register_cli(cls, app: typer.Typer) -> None:
        """Add this platform's own commands to the ``dockwise`` CLI ``app`` (none by
        default). Commands fail with ``bot.cli.fail`` (one line, exit code 1 or 2)."""

    async def deliver(self, target: dict[str, Any], reply: Reply) -> None:
        """Post ``reply`` (finished) to ``target``, a dict this adapter described when the
        question came in; works in any role (no listener needed). Raises
        NotImplementedError when the adapter has no deferred answers."""
        raise NotImplementedError(f"{self.name} cannot deliver replies later")

    async def show_progress(self, target: dict[str, Any], line: str) -> None:  # noqa: B027
        """Show the one-line progress ``line`` at ``target`` (nothing by default)."""

    def progress_updates(self, target: dict[str, Any]) -> int | None:
        """How many progress lines ``show_progress`` may show ``target`` (None: no cap);
        ``max_progress_updates`` unless the adapter's targets differ (a webhook with few
        uses, a message edited within a rate limit)."""
        return self.max_progress_updates

    async def setup(self, web_app: web.Application) -> None:  # noqa: B027 - optional hook
        """Before the HTTP server starts: check credentials, add routes to ``web_app``.
        Raises ``bot.errors.DockwiseError`` subclasses with one-line messages."""

    @abstractmethod
    async def run(self) -> None:
        """Serve until cancelled (reconnecting on its own); raises ``DockwiseError`` for
        failures a person must fix (bad token, unreachable service)."""

    def start(self) -> asyncio.Task[None]:
        """``run()`` as a background task (what ``serve`` awaits)."""
        self._task = asyncio.create_task(self.run(), name=self.name)
        return self._task

    def ready(self) -> bool:
        """For ``/readyz``: running and not failed."""
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def adapters() -> dict[str, type[ChatAdapter]]:
    """Every registered adapter class by name (``adapters.PLATFORMS``), imported now."""
    from adapters import PLATFORMS

    found: dict[str, type[ChatAdapter]] = {}
    for module_name in PLATFORMS:
        module = importlib.import_module(module_name)
        adapter: type[ChatAdapter] = module.ADAPTER
        found[adapter.name] = adapter
    return found


def configured_adapters(settings: Settings) -> list[tuple[type[ChatAdapter], Any]]:
    """(adapter class, its settings) for every adapter whose settings are complete."""
    out: list[tuple[type[ChatAdapter], Any]] = []
    for adapter in adapters().values():
        own = adapter.load_settings(settings)
        if adapter.configured(own):
            out.append((adapter, own))
    return out


def secret_env_vars() -> tuple[str, ...]:
    """Names of the environment variables holding secrets: the ``SecretStr`` fields of
    ``bot.config.Settings`` and of every registered adapter's ``settings_model``. Imports
    the adapters (their SDKs) on the first call."""
    names = list(secret_env_names(Settings))
    for adapter in adapters().values():
        names += [n for n in secret_env_names(adapter.settings_model) if n not in names]
    return tuple(names)


def register_cli_commands(app: typer.Typer) -> None:
    """Let every registered adapter add its own commands to the CLI ``app``."""
    for adapter in adapters().values():
        adapter.register_cli(app)


def how_to_configure() -> str:
    """One line listing what to set for each platform."""
    hints = "; ".join(a.how_to_configure for a in adapters().values())
    return (
        f"no chat platform is configured: {hints} "
        "(or run `dockwise chat` to try the bot in this terminal)"
    )
