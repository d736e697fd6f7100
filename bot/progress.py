"""Progress of a long image explanation, and a relay that turns it into message edits.

The engine and the explainer call a ``ProgressCallback`` (synchronously, on the event loop)
with an ``ExplainProgress`` at each stage: starting, looking the image up, each layer read.
Adapters hand the engine a ``ProgressRelay`` wrapping one platform-specific coroutine,
``show(text)``, that posts the placeholder the first time and edits it afterwards. The
relay shows the first event at once ("Inspecting IMAGE …"), then at most one edit per
``min_interval`` seconds, and at least one every ``heartbeat`` seconds while the work runs
(with the elapsed time), so an explanation longer than 2 s is always seen moving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


def human_bytes(size: int) -> str:
    """``size`` bytes as ``12.3 MB`` (decimal units, like registries show sizes)."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"  # pragma: no cover - the loop always returns


@dataclass(frozen=True, slots=True)
class ExplainProgress:
    """Where one explanation is: ``stage`` in words, ``layer`` of ``layers`` finished
    (0 of 0 before the layers are known) and ``bytes_read`` compressed bytes of them."""

    image: str
    stage: str = "starting"
    layer: int = 0
    layers: int = 0
    bytes_read: int = 0

    def text(self, elapsed: float | None = None) -> str:
        """One line for the placeholder, e.g. ``Inspecting python:3.12 … reading layers:
        layer 2 of 5, 31.2 MB read (4 s)``."""
        line = f"Inspecting `{self.image.replace('`', '')}` …"
        if self.stage != "starting":
            line += f" {self.stage}"
            if self.layers:
                line += f": layer {self.layer} of {self.layers}"
                line += f", {human_bytes(self.bytes_read)} read"
        if elapsed is not None and elapsed >= 1:
            line += f" ({elapsed:.0f} s)"
        return line


ProgressCallback = Callable[[ExplainProgress], None]


class ProgressRelay:
    """A ``ProgressCallback`` that shows progress through ``show(text)``.

    ``shown=True`` means the placeholder is already on screen (e.g. a command's ack), so
    the first event is an edit like the others; ``placeholder_text`` is what it says (an
    event that would show the same text is not sent again). ``max_updates`` caps the number of
    ``show`` calls (some reply channels take only a few uses). ``first_after`` (seconds)
    holds the first ``show`` back until the work has run that long, so a tight budget is not
    spent on the first stage of work that ends at once but shows a long one's layers.
    ``close()`` waits for a ``show`` in flight, so the caller can then replace the
    placeholder with the result.
    """

    def __init__(
        self,
        show: Callable[[str], Awaitable[None]],
        *,
        min_interval: float = 1.0,
        heartbeat: float = 2.0,
        max_updates: int | None = None,
        shown: bool = False,
        placeholder_text: str | None = None,
        first_after: float = 0.0,
    ) -> None:
        self._show = show
        self.first_after = first_after
        self.min_interval = min_interval
        self.heartbeat = heartbeat
        self.max_updates = max_updates
        self.placeholder_shown = shown
        self.updates = 0
        self.latest: ExplainProgress | None = None
        self._changed = asyncio.Event()
        self._stop = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._started = time.monotonic()
        self._last_text: str | None = placeholder_text  # what is on screen already

    def __call__(self, event: ExplainProgress) -> None:
        self.latest = event
        self._changed.set()
        if self._task is None and not self._stopping:
            self._started = time.monotonic()
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        if self.first_after > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.first_after)
        while not self._stopping:
            if self.placeholder_shown:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), self.heartbeat)
            if self._stopping:
                return
            self._changed.clear()
            if self.max_updates is not None and self.updates >= self.max_updates:
                return
            event = self.latest
            if event is None:
                continue
            elapsed = time.monotonic() - self._started
            text = event.text(elapsed if self.placeholder_shown else None)
            if text != self._last_text:
                try:
                    await self._show(text)
                    self.placeholder_shown = True
                    self.updates += 1
                    self._last_text = text
                except Exception as exc:  # progress is a nicety: never fail the reply
                    log.warning("progress update failed: %s", type(exc).__name__)
                    return
            if self.min_interval > 0 and not self._stopping:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.min_interval)

    async def close(self) -> None:
        """Stop relaying; returns once any ``show`` in flight has finished."""
        self._stopping = True
        self._changed.set()
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
