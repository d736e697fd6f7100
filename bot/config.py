"""All settings in one place: environment variables and an optional ``.env`` file."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _default_cache_dir() -> Path:
    import os

    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dockwise"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", populate_by_name=True, env_ignore_empty=True
    )

    # Slack
    slack_bot_token: SecretStr | None = Field(None, validation_alias="SLACK_BOT_TOKEN")
    slack_app_token: SecretStr | None = Field(None, validation_alias="SLACK_APP_TOKEN")
    slack_signing_secret: SecretStr | None = Field(None, validation_alias="SLACK_SIGNING_SECRET")
    slack_api_url: str | None = Field(None, validation_alias="DOCKWISE_SLACK_API_URL")

    # Discord
    discord_token: SecretStr | None = Field(None, validation_alias="DISCORD_TOKEN")
    discord_guild_id: int | None = Field(None, validation_alias="DISCORD_GUILD_ID")
    discord_api_url: str | None = Field(None, validation_alias="DOCKWISE_DISCORD_API_URL")
    discord_gateway_url: str | None = Field(None, validation_alias="DOCKWISE_DISCORD_GATEWAY_URL")
    discord_shard_count: int | None = Field(None, validation_alias="DISCORD_SHARD_COUNT")

    # HTTP server (Slack HTTP mode, health, metrics)
    host: str = Field("127.0.0.1", validation_alias="DOCKWISE_HOST")
    port: int = Field(3000, validation_alias="DOCKWISE_PORT")

    # Images
    cache_dir: Path = Field(
        default_factory=_default_cache_dir, validation_alias="DOCKWISE_CACHE_DIR"
    )
    insecure_registries: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias="DOCKWISE_INSECURE_REGISTRIES"
    )
    registry_allowlist: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias="DOCKWISE_REGISTRY_ALLOWLIST"
    )
    registry_mirrors: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias="DOCKWISE_REGISTRY_MIRRORS"
    )
    redis_url: SecretStr | None = Field(None, validation_alias="DOCKWISE_REDIS_URL")
    # Size cap of the SQLite cache's entries in bytes, least recently used out (0: none)
    cache_max_bytes: int = Field(1 << 30, ge=0, validation_alias="DOCKWISE_CACHE_MAX_BYTES")
    docker_config: Path | None = Field(
        None, validation_alias=AliasChoices("DOCKWISE_DOCKER_CONFIG", "DOCKER_CONFIG")
    )
    explain_timeout: float = Field(60.0, validation_alias="DOCKWISE_EXPLAIN_TIMEOUT")
    # Rate limits per user, ``limits`` notation ("20/minute", "20/minute;200/hour")
    rate_limit: str = Field("10/minute", validation_alias="DOCKWISE_RATE_LIMIT")
    explain_rate_limit: str = Field("4/minute", validation_alias="DOCKWISE_EXPLAIN_RATE_LIMIT")

    # Caps on what one explanation may read from an untrusted image (bytes)
    max_manifest_bytes: int = Field(4 << 20, validation_alias="DOCKWISE_MAX_MANIFEST_BYTES")
    max_config_bytes: int = Field(8 << 20, validation_alias="DOCKWISE_MAX_CONFIG_BYTES")
    max_compressed_bytes: int = Field(2 << 30, validation_alias="DOCKWISE_MAX_COMPRESSED_BYTES")
    max_uncompressed_bytes: int = Field(8 << 30, validation_alias="DOCKWISE_MAX_UNCOMPRESSED_BYTES")
    max_layer_uncompressed_bytes: int = Field(
        8 << 30, validation_alias="DOCKWISE_MAX_LAYER_UNCOMPRESSED_BYTES"
    )

    @field_validator("insecure_registries", "registry_allowlist", "registry_mirrors", mode="before")
    @classmethod
    def _split_csv(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip().lower() for part in value.split(",") if part.strip()]
        return value

    def masked(self) -> dict[str, str]:
        """Every setting by its environment variable name, secrets shown as ``***``."""
        out: dict[str, str] = {}
        for name, field in type(self).model_fields.items():
            alias = field.validation_alias
            key = alias if isinstance(alias, str) else name.upper()
            if isinstance(alias, AliasChoices):
                key = str(alias.choices[0])
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                shown = "***"
            elif isinstance(value, list):
                shown = ",".join(value)
            else:
                shown = "" if value is None else str(value)
            out[key] = shown
        return out

    @property
    def slack_enabled(self) -> bool:
        return self.slack_bot_token is not None and (
            self.slack_app_token is not None or self.slack_signing_secret is not None
        )

    @property
    def discord_enabled(self) -> bool:
        return self.discord_token is not None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
