"""All settings in one place: environment variables and an optional ``.env`` file."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, get_args

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _default_cache_dir() -> Path:
    import os

    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dockwise"


def env_name(name: str, field: FieldInfo) -> str:
    """The environment variable a settings field is read from (its first alias)."""
    alias = field.validation_alias
    if isinstance(alias, str):
        return alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return name.upper()


def masked_settings(settings: BaseSettings) -> dict[str, str]:
    """Every field of ``settings`` by its environment variable name, values as text
    (lists comma-joined, unset as ``""``), ``SecretStr`` values shown as ``***``."""
    out: dict[str, str] = {}
    for name, field in type(settings).model_fields.items():
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            shown = "***"
        elif isinstance(value, list):
            shown = ",".join(str(v) for v in value)
        else:
            shown = "" if value is None else str(value)
        out[env_name(name, field)] = shown
    return out


def secret_env_names(model: type[BaseSettings]) -> list[str]:
    """Environment variable names of ``model``'s fields typed ``SecretStr`` (or optional)."""
    names: list[str] = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if annotation is SecretStr or SecretStr in get_args(annotation):
            names.append(env_name(name, field))
    return names


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", populate_by_name=True, env_ignore_empty=True
    )

    # HTTP server (chat platforms' HTTP routes, health, metrics)
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

    # Job queue (bot.jobs; roles web/gateway/worker). At most queue_max explanations wait
    # (more are refused as busy); a running job untouched for job_heartbeat seconds is
    # stuck, found by a sweep every job_sweep seconds and retried (job_attempts runs in
    # all); finished jobs' results live job_result_ttl seconds in Redis.
    queue_max: int = Field(100, ge=1, validation_alias="DOCKWISE_QUEUE_MAX")
    # (a dead worker's job restarts within about heartbeat + sweep + 5 s: 30 s by default;
    # shorter heartbeats risk sweeping live jobs whose worker is starved of CPU)
    job_heartbeat: int = Field(15, ge=1, validation_alias="DOCKWISE_JOB_HEARTBEAT")
    job_sweep: int = Field(10, ge=1, validation_alias="DOCKWISE_JOB_SWEEP")
    job_attempts: int = Field(3, ge=1, validation_alias="DOCKWISE_JOB_ATTEMPTS")
    job_result_ttl: int = Field(600, ge=1, validation_alias="DOCKWISE_JOB_RESULT_TTL")
    worker_concurrency: int = Field(4, ge=1, validation_alias="DOCKWISE_WORKER_CONCURRENCY")
    # A stopping worker (SIGTERM) lets its running jobs finish for worker_grace seconds,
    # then hands them back to the queue; keep it under the pod's
    # terminationGracePeriodSeconds minus 15 s (bot.jobs.HAND_BACK_MARGIN) and a little.
    worker_grace: float = Field(60.0, ge=0, le=3600, validation_alias="DOCKWISE_WORKER_GRACE")

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
        return masked_settings(self)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
