"""How many requests does dockwise make of a registry, and which ones count as pulls?

Starts a throwaway ``docker-registry`` with one small image, puts counting proxies in
front of it (one as "the registry", one as a pull-through mirror) and prints, for N
resolutions of the same tag with the tag cache expired every time (``tag_ttl=0``) and a
shared manifest cache:

- HEAD requests for the tag and GET requests for manifests (Docker Hub counts manifest
  GETs against its pull limit, not HEADs);
- the same through a mirror: requests that reached the registry itself.

Run: ``.venv/bin/python bench/registry_pressure.py [N]`` (needs /usr/bin/docker-registry).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.image.reference import parse_reference  # noqa: E402
from bot.image.registry import MemoryManifestCache, RegistryClient  # noqa: E402
from bot.image.remote.transport import parse_mirrors  # noqa: E402
from tests.fixtures.registry import make_layer, push_image, start_registry  # noqa: E402
from tests.test_registry_pressure import CountingProxy  # noqa: E402


async def run(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = start_registry(Path(tmp) / "registry")
        try:
            push_image(server.pusher(), "bench/app", "v1", [make_layer({"etc/x": b"x"})])
            upstream = await CountingProxy(server.url).start()
            mirror = await CountingProxy(server.url).start()
            try:
                ref = parse_reference(f"{upstream.host}/bench/app:v1")
                cache = MemoryManifestCache()
                async with RegistryClient(
                    insecure_registries=[upstream.host], cache=cache, tag_ttl=0
                ) as client:
                    for _ in range(n):
                        await client.get_manifest(ref)
                heads, gets = (
                    upstream.count("HEAD", "/manifests/"),
                    upstream.count("GET", "/manifests/"),
                )
                print(f"{n} resolutions of a tag, tag cache expired each time:")
                print(f"  HEAD manifest requests: {heads}")
                print(f"  GET manifest requests (pulls on Docker Hub): {gets}")
                upstream.requests.clear()
                async with RegistryClient(
                    insecure_registries=[upstream.host, mirror.host],
                    cache=MemoryManifestCache(),
                    tag_ttl=0,
                    mirrors=parse_mirrors([f"{upstream.host}=http://{mirror.host}"]),
                ) as client:
                    for _ in range(n):
                        await client.get_manifest(ref)
                print(f"the same through a mirror ({mirror.host}):")
                print(f"  requests to the mirror: {len(mirror.requests)}")
                print(f"  requests to the registry itself: {len(upstream.requests)}")
            finally:
                await upstream.stop()
                await mirror.stop()
        finally:
            server.stop()


if __name__ == "__main__":
    asyncio.run(run(int(sys.argv[1]) if len(sys.argv) > 1 else 50))
