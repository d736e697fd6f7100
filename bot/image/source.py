"""The contract between image sources (registry, Docker Engine) and layer analysis.

A source turns a reference into a ``ResolvedImage``: the manifest-level facts plus one
``LayerBlob`` per filesystem layer, bottom to top, each able to *stream* its bytes.
Analysis never sees HTTP or the Docker API, and sources never parse tar files.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Compression = Literal["gzip", "zstd", "none"]


@dataclass(frozen=True, slots=True)
class Platform:
    os: str = "linux"
    architecture: str = "amd64"
    variant: str | None = None

    def __str__(self) -> str:
        base = f"{self.os}/{self.architecture}"
        return f"{base}/{self.variant}" if self.variant else base

    @classmethod
    def parse(cls, text: str) -> Platform:
        """Parse ``os/arch[/variant]``; raises ValueError with a clear message."""
        parts = text.strip().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"invalid platform {text!r}: expected os/arch or os/arch/variant")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)


@dataclass(frozen=True, slots=True)
class LayerBlob:
    """One filesystem layer. ``digest`` is the content address used as cache key
    (the compressed blob digest from a registry, the diff_id from the engine).

    ``open_blocking`` (optional) gives the same bytes as ``open`` to a worker thread, for a
    source whose bytes arrive in a thread anyway (the engine's export): iterating it blocks
    the calling thread, never the event loop, and saves a loop round trip per chunk. Its
    argument is a stop flag: once set (the reader gave up), a blocked iteration raises
    ``ContentError`` promptly. Errors are the same as ``open``'s."""

    digest: str
    size: int | None  # compressed size as stored (None when the source cannot tell)
    compression: Compression
    open: Callable[[], AsyncIterator[bytes]]  # each call starts a fresh stream
    diff_id: str | None = None
    open_blocking: Callable[[threading.Event], Iterator[bytes]] | None = None


@dataclass(slots=True)
class ResolvedImage:
    reference: str  # normalised, e.g. docker.io/library/python:3.12-slim
    source: Literal["registry", "docker"]
    digest: str | None  # manifest digest (registry) or image id / repo digest (engine)
    platform: Platform
    platforms: list[Platform]
    config: dict[str, Any]  # the image config JSON (architecture, os, config, rootfs, history)
    layers: list[LayerBlob] = field(default_factory=list)  # bottom to top
    # Engine only: where the engine says this image is stored ("host/repo@sha256:…").
    repo_digests: list[str] = field(default_factory=list)


class ImageSource(Protocol):
    name: Literal["registry", "docker"]

    async def resolve(self, reference: str, platform: Platform) -> ResolvedImage:
        """Raise bot.errors.ImageNotFound / Unauthorized / Unreachable / ContentError."""
        ...
