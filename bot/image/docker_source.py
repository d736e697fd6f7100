"""Images from a local Docker Engine (``DOCKER_HOST`` or the default socket).

``resolve()`` reads the image's metadata (``inspect`` + ``history``) and returns layers
whose bytes are fetched only when a layer is first opened.

How layers are streamed
-----------------------
The engine has no "give me layer N" call: the only way to get layer bytes is
``GET /images/{id}/get`` (``docker save``), one tar stream holding every layer as an
uncompressed tar member, in an order that is not the order analysis wants (analysis reads
the top layer first; the legacy format names layers by v1 ids and lists the mapping in
``manifest.json`` at the *end* of the stream; the OCI format of newer engines names them
``blobs/sha256/<diff id>``). So the first ``open()`` of any layer runs one save and
*spools* every layer member to its own file under ``<cache_dir>/docker-spool/`` in
fixed-size chunks (memory stays at one chunk, whatever the layer size), then maps files to
diff ids through ``manifest.json``. Each ``open()`` then streams its file, and deletes it
once read to the end: disk use peaks at the image's uncompressed size and shrinks as
analysis proceeds. A layer opened again after that triggers a fresh save. Whatever is left
(layers analysis skipped, e.g. because their results were cached) is removed when the
``ResolvedImage`` is garbage-collected or at interpreter exit.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import re
import shutil
import tarfile
import tempfile
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import docker
import docker.errors
from docker.client import DockerClient

from bot.config import Settings, get_settings
from bot.errors import ContentError, ImageNotFound, Unreachable
from bot.image.reference import looks_like_image_id, parse_reference
from bot.image.source import LayerBlob, Platform, ResolvedImage
from bot.observability import BYTES_FETCHED

CHUNK = 1 << 20  # bytes per read from the save stream and from spool files
CONFIG_MAX = 8 << 20  # the image config inside the save stream
# A hung engine must count as "no engine" (so --source auto falls back to the registry)
# well within the explanation timeout: connecting (API version check) and the first ping
# get PING_TIMEOUT seconds; later calls (inspect, save streams) get TRANSFER_TIMEOUT.
PING_TIMEOUT = 3
TRANSFER_TIMEOUT = 60


def _default_client() -> DockerClient:
    client = docker.from_env(timeout=PING_TIMEOUT)
    client.ping()
    client.api.timeout = TRANSFER_TIMEOUT
    return client


# Instructions that never change the filesystem. WORKDIR is not one: the classic builder
# commits a layer for it when it creates the directory (an empty one when it exists).
_METADATA_ONLY = re.compile(
    r"^(?:/bin/sh -c #\(nop\) (?!ADD |COPY |WORKDIR )|(?:ENV|LABEL|CMD|ENTRYPOINT|EXPOSE|USER|"
    r"VOLUME|STOPSIGNAL|HEALTHCHECK|SHELL|ONBUILD|ARG|MAINTAINER)\b)"
)
MAX_PARENT_INSPECTS = 256  # intermediate images looked at to align history with layers


class _ChunkReader(io.RawIOBase):
    """A read-only file object over an iterator of byte chunks (the save stream)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        view = memoryview(target)
        while not self._buffer:
            try:
                self._buffer = next(self._chunks)
            except StopIteration:
                return 0
        count = min(len(view), len(self._buffer))
        view[:count] = self._buffer[:count]
        self._buffer = self._buffer[count:]
        return count


class _Spool:
    """One ``docker save`` of one image, demultiplexed to a file per layer on first need."""

    def __init__(
        self,
        client: DockerClient,
        image_id: str,
        diff_ids: list[str],
        root: Path,
        config: dict[str, Any] | None = None,
    ):
        self._client = client
        self._image_id = image_id
        self._diff_ids = diff_ids
        self._config = config  # the ResolvedImage's config: history corrected from the save
        self._root = root
        self._lock = threading.Lock()
        self._dir: Path | None = None
        self._files: dict[str, Path] = {}  # diff id -> spooled layer tar
        self._finalizer: weakref.finalize[Any, Any] | None = None

    def _save(self) -> None:
        self._root.mkdir(parents=True, exist_ok=True)
        directory = Path(tempfile.mkdtemp(prefix="save-", dir=self._root))
        self._dir = directory
        self._finalizer = weakref.finalize(self, shutil.rmtree, directory, True)
        members: dict[str, Path] = {}
        manifest: list[dict[str, Any]] | None = None
        hex_id = self._image_id.removeprefix("sha256:")
        config_names = {f"{hex_id}.json", f"blobs/sha256/{hex_id}"}  # legacy and OCI layouts
        try:
            stream = self._client.api.get_image(self._image_id, chunk_size=CHUNK)
            reader = io.BufferedReader(_ChunkReader(iter(stream)), CHUNK)
            with tarfile.open(fileobj=reader, mode="r|") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    source = tar.extractfile(member)
                    if source is None:
                        continue
                    if member.name == "manifest.json":
                        manifest = json.loads(source.read(16 << 20))
                        continue
                    if member.name in config_names:
                        self._take_config(source.read(CONFIG_MAX + 1))
                        continue
                    if not (member.name.endswith("/layer.tar") or member.name.startswith("blobs/")):
                        continue  # legacy v1 metadata (json, VERSION, repositories)
                    path = directory / f"{len(members)}.tar"
                    with path.open("wb") as out:
                        shutil.copyfileobj(source, out, CHUNK)
                    members[member.name] = path
        except docker.errors.NotFound as exc:
            raise ImageNotFound(f"image {self._image_id[:19]} vanished from the engine") from exc
        except docker.errors.DockerException as exc:
            raise Unreachable(f"Docker Engine failed while saving the image: {exc}") from exc
        except (tarfile.TarError, ValueError) as exc:
            raise ContentError(f"Docker Engine sent a malformed image archive: {exc}") from exc
        if not manifest or not isinstance(manifest[0].get("Layers"), list):
            raise ContentError("Docker Engine sent an image archive without manifest.json")
        paths: list[str] = manifest[0]["Layers"]
        if len(paths) != len(self._diff_ids):
            raise ContentError(
                f"image archive lists {len(paths)} layers, the image config {len(self._diff_ids)}"
            )
        for diff_id, name in zip(self._diff_ids, paths, strict=True):
            if name not in members:
                raise ContentError(f"image archive lacks layer {name}")
            self._files[diff_id] = members[name]
        for path in set(members.values()) - set(self._files.values()):
            path.unlink()  # OCI-format config and manifest blobs

    def _take_config(self, data: bytes) -> None:
        """The image's own config (its sha256 is the image ID): its history, with the
        builder's ``empty_layer`` flags, replaces the one rebuilt from the history API."""
        if self._config is None or len(data) > CONFIG_MAX:
            return
        if "sha256:" + hashlib.sha256(data).hexdigest() != self._image_id:
            return
        try:
            saved = json.loads(data)
        except ValueError:
            return
        history = saved.get("history") if isinstance(saved, dict) else None
        rootfs = saved.get("rootfs") if isinstance(saved, dict) else None
        if not isinstance(history, list) or not isinstance(rootfs, dict):
            return
        if rootfs.get("diff_ids") != self._diff_ids:
            return
        made = sum(1 for h in history if isinstance(h, dict) and not h.get("empty_layer"))
        if made == len(self._diff_ids) and all(isinstance(h, dict) for h in history):
            self._config["history"] = history

    def take(self, diff_id: str) -> Path:
        """The spooled file of ``diff_id``, running the save if it is not (or no more) there."""
        with self._lock:
            path = self._files.get(diff_id)
            if path is None or not path.exists():
                self.cleanup()
                self._save()
                path = self._files[diff_id]
            return path

    def done(self, diff_id: str) -> None:
        with self._lock:
            path = self._files.pop(diff_id, None)
        if path is not None:
            path.unlink(missing_ok=True)

    def cleanup(self) -> None:
        if self._finalizer is not None:
            self._finalizer()
        self._files.clear()


def _history(
    raw: list[dict[str, Any]], layer_count: int, known: list[bool | None] | None = None
) -> list[dict[str, Any]]:
    """Engine history (newest first) -> config-style history (oldest first) with
    ``empty_layer`` set so that the non-empty entries line up with the layers.

    ``known`` (oldest first, one per entry) says for some entries whether they made a
    layer, as learnt from intermediate images (``_layer_steps``); the others are judged by
    size and instruction, and entries that could be either become layers bottom up until
    the count matches."""
    entries = []
    kinds: list[Literal["layer", "empty", "unsure"]] = []
    known = known if known is not None and len(known) == len(raw) else [None] * len(raw)
    for item, made_layer in zip(reversed(raw), known, strict=True):
        created_by = str(item.get("CreatedBy") or "")
        entry: dict[str, Any] = {"created_by": created_by}
        created = item.get("Created")
        if isinstance(created, int | float) and created > 0:
            entry["created"] = datetime.fromtimestamp(created, UTC).isoformat()
        if item.get("Comment"):
            entry["comment"] = item["Comment"]
        entries.append(entry)
        size = int(item.get("Size") or 0)
        if made_layer is not None:
            kinds.append("layer" if made_layer else "empty")
        elif size > 0:
            kinds.append("layer")
        elif _METADATA_ONLY.match(created_by.strip()):
            kinds.append("empty")
        else:
            kinds.append("unsure")
    # Unsure entries become layers, bottom up, until the non-empty entries match the layers
    # (covers both "all unsure are layers" and "none are").
    missing = layer_count - kinds.count("layer")
    for entry, kind in zip(entries, kinds, strict=True):
        if kind == "unsure" and missing > 0:
            missing -= 1
        elif kind != "layer":
            entry["empty_layer"] = True
    return entries


# The runtime keys of the image config spec; the engine's inspect adds container-only
# fields (Hostname, AttachStdin, Image, ...) and writes absent ones as "" / null.
_RUNTIME_KEYS = (
    "User",
    "ExposedPorts",
    "Env",
    "Entrypoint",
    "Cmd",
    "Volumes",
    "WorkingDir",
    "Labels",
    "StopSignal",
    "ArgsEscaped",
    "Healthcheck",
    "OnBuild",
    "Shell",
)


def _runtime_config(raw: dict[str, Any]) -> dict[str, Any]:
    return {key: raw[key] for key in _RUNTIME_KEYS if raw.get(key) not in (None, "", [], {})}


def _layer_steps(
    client: DockerClient, raw: list[dict[str, Any]], layer_count: int
) -> list[bool | None]:
    """Which history entries made a layer, oldest first (None: cannot tell).

    Images built by the classic builder keep an intermediate image per step; the history
    API names them (``Id``, else ``<missing>``). A step made a layer exactly when its image
    has more layers than the previous step's image: the image config's ``empty_layer``
    flag, read through the engine's API without exporting the image."""
    counts: list[int | None] = []
    for index, item in enumerate(raw):  # newest first
        image_id = str(item.get("Id") or "")
        if index == 0:
            counts.append(layer_count)
            continue
        if not image_id.startswith("sha256:") or index > MAX_PARENT_INSPECTS:
            counts.append(None)
            continue
        try:
            parent: dict[str, Any] = client.api.inspect_image(image_id)  # type: ignore[no-untyped-call]
        except docker.errors.DockerException:
            counts.append(None)
            continue
        counts.append(len((parent.get("RootFS") or {}).get("Layers") or []))
    known: list[bool | None] = []
    for index, count in enumerate(counts):
        older = counts[index + 1] if index + 1 < len(counts) else 0
        if index + 1 == len(counts) and count is not None:
            known.append(count > 0)  # the oldest step: any layer is its own
        elif count is None or older is None:
            known.append(None)
        else:
            known.append(count > older)
    return list(reversed(known))


def _config(
    inspect: dict[str, Any],
    history: list[dict[str, Any]],
    known: list[bool | None] | None = None,
) -> dict[str, Any]:
    diff_ids = list((inspect.get("RootFS") or {}).get("Layers") or [])
    config: dict[str, Any] = {
        "architecture": inspect.get("Architecture") or "amd64",
        "os": inspect.get("Os") or "linux",
        "config": _runtime_config(inspect.get("Config") or {}),
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": _history(history, len(diff_ids), known),
    }
    for key, target in (("Variant", "variant"), ("Created", "created"), ("Author", "author")):
        if inspect.get(key):
            config[target] = inspect[key]
    return config


class DockerSource:
    """``ImageSource`` over the Docker Engine API (the ``docker`` SDK, run in threads)."""

    name: Literal["docker"] = "docker"

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        client_factory: Callable[[], DockerClient] | None = None,
    ) -> None:
        self.settings = settings if settings is not None else get_settings()
        self._client_factory = client_factory or _default_client
        self._client: DockerClient | None = None

    def _connect(self) -> DockerClient:
        if self._client is None:
            try:
                client = self._client_factory()
                client.ping()
            except docker.errors.DockerException as exc:
                raise Unreachable(f"no Docker Engine reachable ({_short(exc)})") from exc
            except OSError as exc:
                raise Unreachable(f"no Docker Engine reachable ({exc})") from exc
            self._client = client
        return self._client

    async def aclose(self) -> None:
        """Close the engine connection (spooled layers go with their ResolvedImage)."""
        client, self._client = self._client, None
        if client is not None:
            await asyncio.to_thread(client.close)

    async def resolve(self, reference: str, platform: Platform) -> ResolvedImage:
        """``reference`` is a name (normalised here) or an image ID: ``sha256:<64 hex>``,
        64 hex digits or a short prefix, which the engine looks up as ``docker inspect``
        does (a name first, then a unique ID prefix)."""
        if looks_like_image_id(reference):
            return await asyncio.to_thread(self._resolve, reference, platform)
        ref = parse_reference(reference)
        return await asyncio.to_thread(self._resolve, str(ref), platform)

    def _resolve(self, name: str, platform: Platform) -> ResolvedImage:
        client = self._connect()
        try:
            image = client.images.get(name)
            inspect: dict[str, Any] = image.attrs
            history: list[dict[str, Any]] = image.history()
        except docker.errors.ImageNotFound as exc:
            raise ImageNotFound(f"image {name} is not in the local Docker Engine") from exc
        except docker.errors.NotFound as exc:
            raise ImageNotFound(f"image {name} is not in the local Docker Engine") from exc
        except docker.errors.DockerException as exc:
            raise Unreachable(f"Docker Engine failed to inspect {name} ({_short(exc)})") from exc
        layer_count = len((inspect.get("RootFS") or {}).get("Layers") or [])
        config = _config(inspect, history, _layer_steps(client, history, layer_count))
        have = Platform(config["os"], config["architecture"], config.get("variant"))
        if (have.os, have.architecture) != (platform.os, platform.architecture) or (
            platform.variant and platform.variant != have.variant
        ):
            raise ImageNotFound(
                f"the local Docker Engine has {name} only for {have}, not {platform}"
            )
        image_id = str(inspect["Id"])
        diff_ids: list[str] = config["rootfs"]["diff_ids"]
        spool = _Spool(client, image_id, diff_ids, self.settings.cache_dir / "docker-spool", config)
        layers = [
            LayerBlob(
                digest=diff_id,
                size=None,
                compression="none",
                open=_opener(spool, diff_id),
                diff_id=diff_id,
            )
            for diff_id in diff_ids
        ]
        repo_digests = [d for d in inspect.get("RepoDigests") or [] if "@" in d]
        if looks_like_image_id(name):  # asked by ID: name it by its first tag, if any
            tags = [t for t in inspect.get("RepoTags") or [] if t and "<none>" not in t]
            name = str(parse_reference(tags[0])) if tags else image_id
        return ResolvedImage(
            reference=name,
            source="docker",
            digest=repo_digests[0].split("@", 1)[1] if repo_digests else image_id,
            platform=have,
            platforms=[have],
            config=config,
            layers=layers,
            repo_digests=repo_digests,
        )


def _opener(spool: _Spool, diff_id: str) -> Callable[[], AsyncIterator[bytes]]:
    async def stream() -> AsyncIterator[bytes]:
        path = await asyncio.to_thread(spool.take, diff_id)
        handle = await asyncio.to_thread(path.open, "rb")
        finished = False
        try:
            while chunk := await asyncio.to_thread(handle.read, CHUNK):
                BYTES_FETCHED.labels(source="docker").inc(len(chunk))
                yield chunk
            finished = True
        finally:
            handle.close()
            if finished:
                spool.done(diff_id)

    return stream


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 160 else text[:157] + "..."
