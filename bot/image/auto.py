"""``--source auto``: when the Docker Engine has the image, read it from a registry anyway
if the engine says the very same image is stored there.

The engine's ``RepoDigests`` (``host/repo@sha256:…``) name manifests by digest, so the
registry's copy is the same content, byte for byte; a registry serves compressed layers
one by one and in parallel, while the engine can only export the whole image as one
uncompressed tar (``docker save``). A registry copy is used only when the registry is
allowed (``DOCKWISE_REGISTRY_ALLOWLIST``), passes the address guard, answers within
``PROBE_SECONDS`` and its image has exactly the engine's layers (diff IDs) and platform;
otherwise the engine's image is used, as before. A registry that could not be reached is
not asked again for ``FORGET_SECONDS`` (offline machines pay the probe once).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from bot.errors import DockwiseError, Unreachable
from bot.image.reference import Reference, parse_reference

if TYPE_CHECKING:
    from bot.config import Settings
    from bot.image.source import ImageSource, Platform, ResolvedImage

log = logging.getLogger(__name__)

PROBE_SECONDS = 5.0  # how long resolving the registry copy may take before the engine wins
FORGET_SECONDS = 300.0  # a registry that could not be reached is not asked again this long
_unreachable: dict[str, float] = {}  # registry domain -> monotonic time it failed


def registry_candidates(engine_image: ResolvedImage, wanted: Reference | None) -> list[str]:
    """The engine's repo digests as references, the one of the asked-for repository first."""
    refs: list[Reference] = []
    for text in engine_image.repo_digests:
        try:
            refs.append(parse_reference(text))
        except DockwiseError:
            continue
    if wanted is not None:
        refs.sort(key=lambda r: r.name != wanted.name)
    return [str(r) for r in refs]


async def registry_copy(
    engine_image: ResolvedImage,
    registry: ImageSource,
    settings: Settings,
    platform: Platform,
    wanted: Reference | None = None,
) -> ResolvedImage | None:
    """The same image resolved from a registry the engine's ``RepoDigests`` name, or None
    when no such registry is allowed, reachable and holding exactly these layers."""
    from bot.netguard import check_registry_allowed

    diff_ids = engine_image.config.get("rootfs", {}).get("diff_ids")
    for candidate in registry_candidates(engine_image, wanted):
        ref = parse_reference(candidate)
        failed = _unreachable.get(ref.domain)
        if failed is not None and time.monotonic() - failed < FORGET_SECONDS:
            continue  # an offline or blackholed registry costs the probe time once only
        try:
            check_registry_allowed(ref.domain, settings)
            image = await asyncio.wait_for(registry.resolve(candidate, platform), PROBE_SECONDS)
        except (Unreachable, TimeoutError) as exc:
            _unreachable[ref.domain] = time.monotonic()
            log.debug("registry copy %s not used: %s", candidate, exc)
            continue
        except DockwiseError as exc:
            log.debug("registry copy %s not used: %s", candidate, exc)
            continue
        same_layers = image.config.get("rootfs", {}).get("diff_ids") == diff_ids
        if same_layers and image.platform == engine_image.platform:
            return image
        log.debug("registry copy %s differs from the engine's image", candidate)
    return None
