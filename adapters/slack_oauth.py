"""Slack for many workspaces: where bolt's OAuth flow keeps installations and states.

Used by ``adapters.slack`` in OAuth mode (``SLACK_CLIENT_ID`` + ``SLACK_CLIENT_SECRET``, no
``SLACK_BOT_TOKEN``). Installations (one bot token per workspace, with its refresh token
and expiry when token rotation is on) and OAuth ``state`` values live in SQL tables through
slack_sdk's asyncio SQLAlchemy stores (``AsyncSQLAlchemyInstallationStore``,
``AsyncSQLAlchemyOAuthStateStore``; tables ``slack_installations``, ``slack_bots``,
``slack_oauth_states``), on ``DOCKWISE_DATABASE_URL``:

- unset: SQLite in the cache dir, ``sqlite:///$DOCKWISE_CACHE_DIR/slack.db`` (one process);
- ``sqlite:///PATH``: that SQLite file (driven by aiosqlite);
- ``postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB`` (``postgresql://`` and
  ``postgres://`` mean the same): PostgreSQL through psycopg 3, shared by replicas.

Tables are created at start-up (``SlackStores.create_tables``). Rows carry the app's
client id, so several Slack apps can share one database.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from slack_bolt.authorization import AuthorizeResult
from slack_bolt.authorization.async_authorize import AsyncInstallationStoreAuthorize
from slack_bolt.error import BoltError
from slack_sdk.oauth.installation_store.models.bot import Bot
from slack_sdk.oauth.installation_store.models.installation import Installation
from slack_sdk.oauth.installation_store.sqlalchemy import AsyncSQLAlchemyInstallationStore
from slack_sdk.oauth.state_store.sqlalchemy import AsyncSQLAlchemyOAuthStateStore
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bot.errors import InvalidInput, Unreachable

__all__ = [
    "INSTALL_PATH",
    "REDIRECT_PATH",
    "SCOPES",
    "STATE_EXPIRATION_SECONDS",
    "InstallationStore",
    "SlackStores",
    "StoreAuthorize",
    "async_database_url",
    "default_database_url",
]

log = logging.getLogger(__name__)

INSTALL_PATH = "/slack/install"
REDIRECT_PATH = "/slack/oauth_redirect"
#: The bot scopes the install asks for: ``oauth_config.scopes.bot`` of
#: deploy/slack/manifest.yml (a test keeps the two equal).
SCOPES = (
    "app_mentions:read",
    "chat:write",
    "commands",
    "im:history",
    "im:read",
    "im:write",
    "links:read",
    "links:write",
)
#: How long an install link (its ``state``) stays usable, in seconds (Slack's own default).
STATE_EXPIRATION_SECONDS = 600

_URL_HELP = "sqlite:///PATH or postgresql+psycopg://USER:PASSWORD@HOST:PORT/DATABASE"


def default_database_url(cache_dir: Path) -> str:
    """``sqlite:///CACHE_DIR/slack.db``: the embedded default."""
    return f"sqlite:///{cache_dir / 'slack.db'}"


def async_database_url(url: str) -> URL:
    """``url`` with the asyncio driver SQLAlchemy needs: ``sqlite+aiosqlite`` for SQLite,
    ``postgresql+psycopg`` for PostgreSQL (``postgres://`` and ``postgresql://`` too).
    Raises InvalidInput (one line, no password) for anything else."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise InvalidInput(
            f"DOCKWISE_DATABASE_URL is not a database URL: use {_URL_HELP}"
        ) from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite")
    if backend in {"postgresql", "postgres"}:
        driver = parsed.drivername.partition("+")[2]
        if driver not in {"", "psycopg", "psycopg_async"}:
            raise InvalidInput(
                f"DOCKWISE_DATABASE_URL names the {driver} driver: use postgresql+psycopg://"
            )
        return parsed.set(drivername="postgresql+psycopg")
    raise InvalidInput(
        f"DOCKWISE_DATABASE_URL is a {backend} URL; dockwise stores Slack installations in "
        f"SQLite or PostgreSQL: use {_URL_HELP}"
    )


def _why(exc: BaseException) -> str:
    """A database error in one line: the driver's exception type and first message line
    (drivers name host, port and user, never the password)."""
    original = getattr(exc, "orig", None) or exc
    first = (str(original).strip().splitlines() or [""])[0][:200]
    return f"{type(original).__name__}: {first}" if first else type(original).__name__


#: Why the last installation lookup in this task failed (None: it did not).
_lookup_failure: ContextVar[str | None] = ContextVar("slack_lookup_failure", default=None)


class InstallationStore(AsyncSQLAlchemyInstallationStore):
    """slack_sdk's asyncio SQLAlchemy installation store; a failed write becomes bolt's
    ``BoltError`` (the OAuth flow then shows its "storage_error" page instead of a 500),
    a failed lookup is noted for ``StoreAuthorize`` (bolt would take it for "not
    installed")."""

    async def async_find_bot(
        self,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        is_enterprise_install: bool | None = False,
    ) -> Bot | None:
        try:
            return await super().async_find_bot(
                enterprise_id=enterprise_id,
                team_id=team_id,
                is_enterprise_install=is_enterprise_install,
            )
        except SQLAlchemyError as exc:
            _lookup_failure.set(_why(exc))
            raise

    async def async_save(self, installation: Installation) -> None:
        try:
            await super().async_save(installation)
        except SQLAlchemyError as exc:
            raise BoltError(f"could not save the installation ({_why(exc)})") from None

    async def async_save_bot(self, bot: Bot) -> None:
        try:
            await super().async_save_bot(bot)
        except SQLAlchemyError as exc:
            raise BoltError(f"could not save the bot token ({_why(exc)})") from None


class StoreAuthorize(AsyncInstallationStoreAuthorize):
    """bolt's installation-store authorize (bot tokens, rotation), except that a database
    failure raises Unreachable: bolt then answers 500 and Slack delivers the request again,
    instead of the workspace being told the app is no longer installed."""

    async def __call__(self, **kwargs: Any) -> AuthorizeResult | None:
        reset = _lookup_failure.set(None)
        try:
            result = await super().__call__(**kwargs)
            failure = _lookup_failure.get()
        finally:
            _lookup_failure.reset(reset)
        if result is None and failure is not None:
            raise Unreachable(f"Cannot read Slack installations ({failure})")
        return result


class SlackStores:
    """The installation store and OAuth state store on one asyncio SQLAlchemy engine.

    ``url``: a database URL as ``DOCKWISE_DATABASE_URL`` takes it (see the module doc);
    ``client_id``: the Slack app's client id (rows are kept per app). Raises InvalidInput
    for an unsupported URL, Unreachable when a SQLite file's directory cannot be made.
    Nothing connects until ``create_tables``."""

    def __init__(self, url: str, client_id: str, *, logger: logging.Logger | None = None) -> None:
        target = async_database_url(url)
        if target.get_backend_name() == "sqlite" and target.database not in (None, "", ":memory:"):
            folder = Path(str(target.database)).expanduser().parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise Unreachable(
                    f"Cannot use the Slack installation database: {folder} is not a "
                    f"directory it can create ({type(exc).__name__})"
                ) from None
        self.backend = target.get_backend_name()
        self.engine: AsyncEngine = create_async_engine(target, pool_pre_ping=True)
        logger = logger or log
        self.installations = InstallationStore(
            client_id=client_id, engine=self.engine, logger=logger
        )
        self.states = AsyncSQLAlchemyOAuthStateStore(
            expiration_seconds=STATE_EXPIRATION_SECONDS, engine=self.engine, logger=logger
        )

    async def create_tables(self) -> None:
        """Create the three tables if missing (safe when replicas start together).
        Raises Unreachable in one line when the database cannot be used."""
        for attempt in (1, 2):
            try:
                await self.installations.create_tables()  # type: ignore[no-untyped-call]
                await self.states.create_tables()  # type: ignore[no-untyped-call]
                return
            except SQLAlchemyError as exc:
                # Another replica may have created a table between check and CREATE.
                if attempt == 2 or "already exists" not in str(exc):
                    raise Unreachable(
                        f"Cannot use the Slack installation database ({self.backend}): {_why(exc)}"
                    ) from None

    async def aclose(self) -> None:
        """Close the engine's connections."""
        await self.engine.dispose()
