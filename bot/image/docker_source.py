"""Images from a local Docker Engine (``DOCKER_HOST`` or the default socket).

``resolve()`` reads the image's metadata (``inspect`` + ``history``) and returns layers
whose bytes are fetched only when a layer is first opened.

How layers are streamed
-----------------------
The engine has no "give me layer N" call: the only way to get layer bytes is
``GET /images/{id}/get`` (``docker save``), one tar stream holding every layer as an
uncompressed tar member, in an order that is not the order analysis wants. The first
``open()`` of any layer starts one export, read by one thread as it arrives (``_Export``):
a layer whose reader is already waiting streams straight to it through a small bounded
hand-off (no disk, memory stays at a few chunks); a layer nobody asked for yet is written
to ``<cache_dir>/docker-spool/`` and handed over as a file when asked for, then deleted.
To stream a member the export must know which layer it is before its bytes: the OCI layout
of newer engines names layers ``blobs/sha256/<diff id>``; the legacy layout names them by
v1 ids, but each ``<v1 id>/json`` (read just before its ``layer.tar``) gives the parent,
so the bottom layer, the top one (its json carries the image config) and layers whose
parents came earlier are known, and any other one by recomputing its v1 id from its json
(``_v1_position``); a member still unknown is written to disk and known by its sha256
once complete. A streamed layer is not hashed again: the engine checks each layer's
bytes against its diff id while exporting it (see ``_Export._hand_over``). A
layer opened again after it was handed out triggers a fresh export. When the
``ResolvedImage`` is garbage-collected, running exports stop and unread files are removed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import queue
import re
import shutil
import tarfile
import tempfile
import threading
import uuid
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
from bot.image.streams import Forward
from bot.observability import BYTES_FETCHED

CHUNK = 1 << 20  # bytes per read from the save stream and from spool files
CONFIG_MAX = 8 << 20  # the image config inside the save stream
HANDOFF_CHUNKS = 8  # chunks in flight between the export thread and a layer's reader
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


def _save_stream(client: DockerClient, image_id: str) -> tuple[Callable[[int], bytes], Any]:
    """``GET /images/{id}/get`` (``docker save``) as ``read(n)`` over the raw response,
    and the response (to close). The SDK's ``get_image`` yields each HTTP chunk the engine
    sends (32 KiB), which costs a Python round trip per 32 KiB; reading the raw response
    in ``CHUNK`` pieces does not. Raises docker.errors (NotFound, APIError) on a refusal."""
    api: Any = client.api  # the SDK's own request helpers (get_image uses them too)
    response = api._get(api._url("/images/{0}/get", image_id), stream=True)
    api._raise_for_status(response)
    raw = response.raw

    def read(size: int) -> bytes:
        data: bytes = raw.read(size, decode_content=False)
        return data

    return read, response


def _member_chunks(stream: Forward, size: int) -> Iterator[bytes]:
    """The data of the tar member the stream is at, as the chunks it arrived in (the
    first and last cut to the member), without joining or copying whole chunks."""
    left = size
    while left > 0:
        chunk = stream.read1(min(left, CHUNK))
        if not chunk:
            raise tarfile.ReadError("unexpected end of data")
        left -= len(chunk)
        yield chunk


class _Want:
    """One reader of one layer: the export thread sends it ``("chunk", bytes)`` messages
    then ``("end", digest)`` (streamed straight from the export), or ``("file", path)``
    (the layer was written to disk before anyone asked for it), or ``("error", exc)``."""

    def __init__(self, diff_id: str) -> None:
        self.diff_id = diff_id
        self.messages: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=HANDOFF_CHUNKS)
        self.closed = threading.Event()  # the reader went away

    def receive(self, stop: threading.Event | None = None) -> tuple[str, Any]:
        """The next message (blocking, in a worker thread); gives up once the reader is
        closed (or ``stop`` is set), so a cancelled reader never strands the thread."""
        while True:
            try:
                return self.messages.get(timeout=0.2)
            except queue.Empty:
                if self.closed.is_set() or (stop is not None and stop.is_set()):
                    return ("error", ContentError("layer reader closed"))

    def send(self, kind: str, value: Any) -> bool:
        """Blocks while the reader is behind; False once the reader has gone away."""
        while not self.closed.is_set():
            try:
                self.messages.put((kind, value), timeout=0.2)
                return True
            except queue.Full:
                continue
        return False


class _Export:
    """One ``docker save`` of one image, read once, in a thread, as it arrives.

    A layer someone is waiting for streams straight to that reader (bounded hand-off, no
    disk); a layer nobody wants yet is written to ``root`` and handed over as a file when
    asked for (deleted once read). Which layer a tar member is must be known before its
    bytes flow: the OCI layout names it (``blobs/sha256/<diff id>``); the legacy layout's
    ``<v1 id>/json`` precedes each ``layer.tar`` and gives its parent, so the bottom layer,
    the top one (it carries the image config) and any whose parents came first are known.
    Other members are written to disk and known by their sha256 when complete (the
    engine itself checks every layer against its diff id as it exports it)."""

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
        self._root = root
        self._config = config  # the ResolvedImage's config: history corrected from the save
        self._lock = threading.Lock()
        self._wants: dict[str, _Want] = {}  # waiting readers by diff id
        self._served: set[str] = set()  # diff ids already handed to a reader
        self._files: dict[str, Path] = {}  # diff id -> written layer tar, not yet read
        self._thread: threading.Thread | None = None
        self._finished = False
        self._stop = threading.Event()
        self._dir: Path | None = None
        self._active: _Want | None = None  # the reader a layer is streaming to right now
        self._v1_json: dict[str, bytes] = {}  # legacy v1 id -> its json, as exported
        self._chain_ids = _chain_ids(diff_ids)

    # ----------------------------------------------------------------- readers

    def want(self, diff_id: str) -> _Want | None:
        """Register a reader for ``diff_id``; None when this export can no longer deliver
        it (already handed out, or finished without it): the caller starts a new export."""
        reader = _Want(diff_id)
        with self._lock:
            path = self._files.pop(diff_id, None)
            if path is not None:
                self._served.add(diff_id)
                reader.messages.put(("file", path))
                return reader
            if diff_id in self._served or diff_id in self._wants or self._finished:
                return None
            self._wants[diff_id] = reader
            if self._thread is None:
                self._root.mkdir(parents=True, exist_ok=True)
                self._dir = Path(tempfile.mkdtemp(prefix="save-", dir=self._root))
                self._thread = threading.Thread(
                    target=self._run, name=f"docker-save {self._image_id[7:19]}", daemon=True
                )
                self._thread.start()
        return reader

    def cleanup(self) -> None:
        """Stop the export and remove what it wrote (layers nobody read)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    # ----------------------------------------------------------------- export thread

    def _run(self) -> None:
        try:
            self._read_export()
            failure: Exception = ContentError("image archive lacks a layer the image lists")
        except docker.errors.NotFound as exc:
            failure = ImageNotFound(f"image {self._image_id[:19]} vanished from the engine")
            failure.__cause__ = exc
        except docker.errors.DockerException as exc:
            failure = Unreachable(f"Docker Engine failed while saving the image: {_short(exc)}")
        except (tarfile.TarError, ValueError, OSError) as exc:
            failure = ContentError(f"Docker Engine sent a malformed image archive: {exc}")
        except Exception as exc:  # never leave a reader waiting
            failure = ContentError(f"reading the Docker Engine's export failed: {exc}")
        with self._lock:
            self._finished = True
            waiting = list(self._wants.values())
            self._wants.clear()
            if self._active is not None:
                waiting.append(self._active)
        for reader in waiting:
            reader.send("error", failure)

    def _claim(self, diff_id: str | None) -> _Want | None:
        if diff_id is None:
            return None
        with self._lock:
            reader = self._wants.pop(diff_id, None)
            if reader is not None:
                self._served.add(diff_id)
            return reader

    def _read_export(self) -> None:
        directory = self._dir
        assert directory is not None
        hex_id = self._image_id.removeprefix("sha256:")
        config_names = {f"{hex_id}.json", f"blobs/sha256/{hex_id}"}  # legacy and OCI layouts
        known = set(self._diff_ids)
        parents: dict[str, str | None] = {}  # legacy v1 id -> parent v1 id
        tops: set[str] = set()  # legacy v1 ids whose json carries the image config
        read, response = _save_stream(self._client, self._image_id)
        stream = Forward(read, CHUNK)
        try:
            # r: mode over a forward-only reader: member data is read (or skipped) straight
            # from the arriving chunks, with no copy through tarfile's stream buffer.
            with tarfile.open(fileobj=stream, mode="r:") as tar:
                for member in tar:
                    if self._stop.is_set():
                        return
                    if not member.isfile():
                        continue
                    name = member.name
                    if name in config_names:
                        self._take_config(stream.read(min(member.size, CONFIG_MAX + 1)))
                        continue
                    if name.endswith("/json"):
                        data = stream.read(min(member.size, CONFIG_MAX + 1))
                        self._take_v1(name, data, parents, tops)
                        continue
                    if name.endswith("/layer.tar"):
                        diff_id = self._legacy_position(name.split("/", 1)[0], parents, tops)
                    elif name.startswith("blobs/sha256/"):
                        diff_id = "sha256:" + name.rsplit("/", 1)[1]
                        if diff_id not in known:
                            continue  # OCI manifests, index, config
                    else:
                        continue  # manifest.json, repositories, VERSION, index.json, oci-layout
                    reader_ = self._claim(diff_id)
                    chunks = _member_chunks(stream, member.size)
                    if reader_ is not None:
                        self._hand_over(chunks, reader_)
                    else:
                        self._write(chunks, directory)
        finally:
            response.close()

    def _take_v1(
        self, name: str, data: bytes, parents: dict[str, str | None], tops: set[str]
    ) -> None:
        try:
            v1 = json.loads(data)
        except ValueError:
            return
        if not isinstance(v1, dict):
            return
        v1_id = name.split("/", 1)[0]
        parent = v1.get("parent")
        parents[v1_id] = parent if isinstance(parent, str) and parent else None
        if isinstance(v1.get("config"), dict):
            tops.add(v1_id)
        self._v1_json[v1_id] = data

    def _legacy_position(
        self, v1_id: str, parents: dict[str, str | None], tops: set[str]
    ) -> str | None:
        """The diff id of a legacy layer directory, if its place is already known."""
        if v1_id in tops and len(tops) == 1:
            return self._diff_ids[-1] if self._diff_ids else None
        depth = 0
        current: str | None = v1_id
        while current is not None:
            if current not in parents or depth >= len(self._diff_ids):
                index = _v1_position(v1_id, self._v1_json.get(v1_id, b""), self._chain_ids)
                return self._diff_ids[index] if index is not None else None
            current = parents[current]
            depth += 1
        return self._diff_ids[depth - 1]

    def _hand_over(self, chunks: Iterator[bytes], reader: _Want) -> None:
        """Stream a member whose layer the archive names. Not hashed again: the engine
        exports a layer through a reader that checks its bytes against the diff ID and
        fails the export on a mismatch (moby's ``roLayer.TarStream``; the containerd store
        serves content-addressed blobs), so hashing here would only repeat that check at
        about 1 s of CPU per 600 MB."""
        self._active = reader
        for chunk in chunks:
            if not reader.send("chunk", chunk):
                self._active = None
                return  # the reader went away; tarfile skips the rest of this member
        self._active = None
        reader.send("end", reader.diff_id)

    def _write(self, chunks: Iterator[bytes], directory: Path) -> None:
        hasher = hashlib.sha256()
        path = directory / f"{uuid.uuid4().hex}.tar"
        with path.open("wb") as out:
            for chunk in chunks:
                if self._stop.is_set():
                    return
                hasher.update(chunk)
                out.write(chunk)
        diff_id = "sha256:" + hasher.hexdigest()
        if diff_id not in self._diff_ids:
            path.unlink()
            return
        with self._lock:
            reader = self._wants.pop(diff_id, None)
            if reader is None:
                if diff_id in self._files or diff_id in self._served:
                    path.unlink()  # a layer listed twice: one copy is enough
                else:
                    self._files[diff_id] = path
                return
            self._served.add(diff_id)
        reader.send("file", path)

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


def _chain_ids(diff_ids: list[str]) -> list[str]:
    """The layer chain ids (OCI image spec, "ChainID"): sha256 of "<parent chain> <diff>"."""
    chains: list[str] = []
    for diff_id in diff_ids:
        if chains:
            text = f"{chains[-1]} {diff_id}".encode()
            chains.append("sha256:" + hashlib.sha256(text).hexdigest())
        else:
            chains.append(diff_id)
    return chains


def _json_members(text: str) -> dict[str, str] | None:
    """The members of a compact JSON object as their raw text (values untouched)."""
    decoder = json.JSONDecoder()
    members: dict[str, str] = {}
    try:
        if not text.startswith("{"):
            return None
        pos = 1
        while text[pos] != "}":
            if text[pos] != '"':
                return None
            key, pos = json.decoder.scanstring(text, pos + 1)  # type: ignore[attr-defined]
            if text[pos] != ":":
                return None
            _, end = decoder.raw_decode(text, pos + 1)
            members[key] = text[pos + 1 : end]
            pos = end + 1 if text[end] == "," else end
    except (ValueError, IndexError):
        return None
    return members


def _v1_position(v1_id: str, data: bytes, chain_ids: list[str]) -> int | None:
    """Which layer a legacy ``<v1 id>/`` directory holds, from its json alone (None when
    that does not tell). The engine names it ``v1.CreateID``: the sha256 of its v1 json
    (Go's compact encoding, keys sorted) without "id", "parent" (and, below the top,
    "os"), plus ``"layer_id": <chain id>`` and ``"parent": "sha256:<parent v1 id>"``. So
    the position whose chain id reproduces the directory's name is its layer; the parent
    chain alone cannot tell while the parents' directories come later in the archive."""
    try:
        members = _json_members(data.decode())
    except UnicodeDecodeError:
        return None
    if members is None:
        return None
    parent = members.get("parent")
    kept = {k: v for k, v in members.items() if k not in ("id", "parent")}
    variants = [kept, {k: v for k, v in kept.items() if k != "os"}]
    for index, chain_id in enumerate(chain_ids):
        for fields in variants:
            doc = dict(fields, layer_id=json.dumps(chain_id))
            if parent is not None:
                doc["parent"] = json.dumps("sha256:" + str(json.loads(parent)))
            text = "{" + ",".join(f"{json.dumps(k)}:{doc[k]}" for k in sorted(doc)) + "}"
            if hashlib.sha256(text.encode()).hexdigest() == v1_id:
                return index
    return None


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
        root = self.settings.cache_dir / "docker-spool"
        exports = _Exports(lambda: _Export(client, image_id, diff_ids, root, config))
        layers = [
            LayerBlob(
                digest=diff_id,
                size=None,
                compression="none",
                open=_opener(exports, diff_id),
                diff_id=diff_id,
                open_blocking=_blocking_opener(exports, diff_id),
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


class _Exports:
    """The current export of one image; a layer asked for again after it was handed out
    (or after the export ended without it) starts a fresh export. When this object goes
    (with its ``ResolvedImage``), running exports stop and their unread files are removed;
    the export thread holds only the ``_Export``, never this."""

    def __init__(self, make: Callable[[], _Export]) -> None:
        self._make = make
        self._lock = threading.Lock()
        self._current: _Export | None = None
        self._all: list[_Export] = []
        weakref.finalize(self, _cleanup_all, self._all)

    def want(self, diff_id: str) -> _Want:
        with self._lock:
            for _attempt in range(2):
                if self._current is None:
                    self._current = self._make()
                    self._all.append(self._current)
                reader = self._current.want(diff_id)
                if reader is not None:
                    return reader
                self._current = None
        raise ContentError(f"the Docker Engine's export has no layer {diff_id}")


def _cleanup_all(exports: list[_Export]) -> None:
    for export in exports:
        export.cleanup()


def _take(diff_id: str, kind: str, value: Any) -> bytes | Path | None:
    """One message of a layer reader (``_LayerReader.receive``): a chunk's bytes (counted),
    the spool file's path when the layer was written to disk, or None at the end. Raises
    ContentError when the layer that ended is not ``diff_id``, and the export's own error
    when the reader got one."""
    if kind == "chunk":
        chunk: bytes = value
        BYTES_FETCHED.labels(source="docker").inc(len(chunk))
        return chunk
    if kind == "end":
        if value != diff_id:
            raise ContentError(f"layer {diff_id} from the engine does not match it")
        return None
    if kind == "file":
        path: Path = value
        return path
    raise value


def _opener(exports: _Exports, diff_id: str) -> Callable[[], AsyncIterator[bytes]]:
    async def stream() -> AsyncIterator[bytes]:
        reader = exports.want(diff_id)
        path: Path | None = None
        try:
            while True:
                kind, value = await asyncio.to_thread(reader.receive)
                taken = _take(diff_id, kind, value)
                if isinstance(taken, bytes):
                    yield taken
                elif taken is None:
                    return
                else:
                    path = taken
                    break
            handle = await asyncio.to_thread(path.open, "rb")
            try:
                while chunk := await asyncio.to_thread(handle.read, CHUNK):
                    BYTES_FETCHED.labels(source="docker").inc(len(chunk))
                    yield chunk
            finally:
                handle.close()
        finally:
            reader.closed.set()
            if path is not None:
                path.unlink(missing_ok=True)

    return stream


def _blocking_opener(
    exports: _Exports, diff_id: str
) -> Callable[[threading.Event], Iterator[bytes]]:
    """``_opener`` for a worker thread: the export thread's chunks go straight to the
    reading thread (one queue hop per chunk, no event loop in between)."""

    def stream(stop: threading.Event) -> Iterator[bytes]:
        reader = exports.want(diff_id)
        path: Path | None = None
        try:
            while True:
                if stop.is_set():
                    raise ContentError("layer reader closed")
                kind, value = reader.receive(stop)
                taken = _take(diff_id, kind, value)
                if isinstance(taken, bytes):
                    yield taken
                elif taken is None:
                    return
                else:
                    path = taken
                    break
            with path.open("rb") as handle:
                while chunk := handle.read(CHUNK):
                    if stop.is_set():
                        raise ContentError("layer reader closed")
                    BYTES_FETCHED.labels(source="docker").inc(len(chunk))
                    yield chunk
        finally:
            reader.closed.set()
            if path is not None:
                path.unlink(missing_ok=True)

    return stream


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 160 else text[:157] + "..."
