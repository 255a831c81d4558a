"""A firmware bundle on its way through MQTT: packed for one pod, cut into parts, put together again.

What one pod is sent (docs/update.md "The command")::

    magic "HLB1" | manifest length u16 LE | manifest | tag (32 bytes) | payload | [root files]
    root files: magic "HLR1" | count u8 | per file: path length u8 | path | size u32 LE | bytes

The manifest and payload are the flash tool's (hypnolum/flash/manifest.py:
``encode``, ``payload``); the tag is HMAC-SHA256 under that pod's update key,
so the pod alone decides whether the bundle is authentic. The root files
(``boot.py``, ``main.py``: never sent over the link) go only to a pod whose
firmware predates updates over the link, which hostd updates through its
REPL as the flash tool would (host/repl_update.py). The packed bundle
travels on ``pods/<id>/update`` as JSON parts, each within hostd's MQTT
payload limit (``mqtt.max_payload``)::

    {"id": str, "index": i, "count": n, "size": bytes, "sha256": hex, "confirm_s": s, "data": base64}

hostd puts the parts of one id together (any order, repeats harmless), checks
the size and sha256, and reads the bundle back (:func:`unpack`).
"""
from __future__ import annotations

import base64
import hashlib
import json
import math
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from ..flash import manifest as mf

MAGIC = b"HLB1"
ROOT_MAGIC = b"HLR1"
ROOT_FILES = ("boot.py", "main.py")  # the firmware's files at the filesystem root (flash/bundle.py SOURCE_ONLY)
TAG_SIZE = 32
_HEAD = struct.Struct("<4sH")
_ROOT_HEAD = struct.Struct("<4sB")
_ROOT_SIZE = struct.Struct("<I")
MAX_BUNDLE = 8 * 1024 * 1024  # more than a pod's app slot ever holds
MAX_PARTS = 4096
DEFAULT_CONFIRM_S = 30
_ENVELOPE = 512  # bytes of a part's JSON besides its data
ID_MAX = 64


class BadPart(ValueError):
    """A part, or the bundle it completes, that hostd cannot take; the message says what."""


@dataclass(frozen=True)
class Packed:
    manifest: bytes
    tag: bytes
    payload: bytes
    build_hash: int
    root: tuple[tuple[str, bytes], ...] = ()  # (path, bytes) of boot.py and main.py, when carried


def pack(manifest: bytes, tag: bytes, payload: bytes, root: tuple[tuple[str, bytes], ...] = ()) -> bytes:
    if len(tag) != TAG_SIZE:
        raise ValueError(f"tag of {len(tag)} bytes, not {TAG_SIZE}")
    out = _HEAD.pack(MAGIC, len(manifest)) + manifest + tag + payload
    if root:
        out += _ROOT_HEAD.pack(ROOT_MAGIC, len(root))
        for path, data in root:
            name = path.encode()
            out += bytes([len(name)]) + name + _ROOT_SIZE.pack(len(data)) + data
    return out


def _root_files(blob: bytes, pos: int) -> tuple[tuple[str, bytes], ...]:
    """The root files section at ``pos`` (nothing there: none); BadPart naming what does not hold."""
    if pos == len(blob):
        return ()
    if blob[pos:pos + 4] != ROOT_MAGIC or len(blob) < pos + _ROOT_HEAD.size:
        raise BadPart(f"bundle: {len(blob) - pos} bytes after the payload that are not its root files ({ROOT_MAGIC!r})")
    (_, count) = _ROOT_HEAD.unpack_from(blob, pos)
    pos += _ROOT_HEAD.size
    files: dict[str, bytes] = {}
    for i in range(count):
        n = blob[pos] if pos < len(blob) else 0
        end = pos + 1 + n + _ROOT_SIZE.size
        if n == 0 or end > len(blob):
            raise BadPart(f"bundle: root file {i} of {count} truncated at byte {len(blob)}")
        path = blob[pos + 1:pos + 1 + n].decode("utf-8", "replace")
        (size,) = _ROOT_SIZE.unpack_from(blob, pos + 1 + n)
        if path not in ROOT_FILES or path in files:
            raise BadPart(f"bundle: root file {path!r}: root files are {', '.join(ROOT_FILES)}, once each")
        if end + size > len(blob):
            raise BadPart(f"bundle: root file {path} truncated: {len(blob) - end} of its {size} bytes")
        files[path] = blob[end:end + size]
        pos = end + size
    if pos != len(blob):
        raise BadPart(f"bundle: {len(blob) - pos} bytes after its root files")
    if sorted(files) != sorted(ROOT_FILES):
        raise BadPart(f"bundle: root files {', '.join(sorted(files)) or 'none'}; it needs {', '.join(ROOT_FILES)}")
    return tuple((p, files[p]) for p in ROOT_FILES)


def unpack(blob: bytes) -> Packed:
    """The bundle in ``blob``; BadPart naming what does not hold."""
    if len(blob) < _HEAD.size or blob[:4] != MAGIC:
        raise BadPart(f"bundle: does not start with {MAGIC!r}")
    (_, mlen) = _HEAD.unpack_from(blob)
    end = _HEAD.size + mlen
    if len(blob) < end + TAG_SIZE:
        raise BadPart(f"bundle: {len(blob)} bytes, shorter than its {mlen}-byte manifest and tag")
    man = blob[_HEAD.size:end]
    try:
        build, entries = mf.decode(man)
    except mf.ManifestError as exc:
        raise BadPart(f"bundle: {exc}") from None
    want = sum(e.size for e in entries)
    payload = blob[end + TAG_SIZE:end + TAG_SIZE + want]
    if len(payload) != want:
        raise BadPart(f"bundle: payload of {len(payload)} bytes, the manifest's files hold {want}")
    root = _root_files(blob, end + TAG_SIZE + want)
    pos = 0
    for e in entries:  # the pod checks them too; a broken bundle is not worth a transfer
        if hashlib.sha256(payload[pos:pos + e.size]).digest() != e.sha256:
            raise BadPart(f"bundle: {e.path}: sha256 differs from the manifest's")
        pos += e.size
    return Packed(man, blob[end:end + TAG_SIZE], payload, build, root)


def split(blob: bytes, bundle_id: str, max_payload: int, confirm_s: float = DEFAULT_CONFIRM_S) -> list[bytes]:
    """The MQTT payloads that carry ``blob``, each at most ``max_payload`` bytes."""
    raw = (max_payload - _ENVELOPE) * 3 // 4
    if raw < 256:
        raise ValueError(f"max_payload {max_payload} leaves no room for a part")
    count = max(1, math.ceil(len(blob) / raw))
    digest = hashlib.sha256(blob).hexdigest()
    out = []
    for i in range(count):
        part = {"id": bundle_id, "index": i, "count": count, "size": len(blob), "sha256": digest,
                "confirm_s": confirm_s, "data": base64.b64encode(blob[i * raw:(i + 1) * raw]).decode()}
        out.append(json.dumps(part, separators=(",", ":")).encode())
    return out


@dataclass
class Assembly:
    """The parts of one bundle received so far."""

    bundle_id: str
    count: int
    size: int
    sha256: str
    confirm_s: float
    parts: dict[int, bytes] = field(default_factory=dict)
    last: float = field(default_factory=time.monotonic)

    def blob(self) -> bytes:
        data = b"".join(self.parts[i] for i in range(self.count))
        if len(data) != self.size:
            raise BadPart(f"bundle {self.bundle_id}: {len(data)} bytes arrived, its parts announced {self.size}")
        if hashlib.sha256(data).hexdigest() != self.sha256:
            raise BadPart(f"bundle {self.bundle_id}: sha256 of the parts differs from the one announced")
        return data


def _get(part: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = part.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise BadPart(f"part: {key!r} missing or not {getattr(kind, '__name__', 'a number')}")
    return value


def parse(payload: bytes) -> tuple[dict[str, Any], bytes]:
    """A part's fields and its data; BadPart naming what is wrong."""
    try:
        part = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadPart(f"part: not JSON ({exc})") from None
    if not isinstance(part, dict):
        raise BadPart("part: not a JSON object")
    bundle_id = _get(part, "id", str)
    if not 0 < len(bundle_id) <= ID_MAX:
        raise BadPart(f"part: id must be 1..{ID_MAX} characters")
    count, index, size = _get(part, "count", int), _get(part, "index", int), _get(part, "size", int)
    if not 0 < count <= MAX_PARTS or not 0 <= index < count:
        raise BadPart(f"part: index {index} of count {count} (count 1..{MAX_PARTS})")
    if not 0 < size <= MAX_BUNDLE:
        raise BadPart(f"part: size {size} outside 1..{MAX_BUNDLE}")
    sha = _get(part, "sha256", str)
    if len(sha) != 64:
        raise BadPart("part: sha256 is not 64 hex digits")
    confirm_s = part.get("confirm_s", DEFAULT_CONFIRM_S)
    if not isinstance(confirm_s, int | float) or isinstance(confirm_s, bool) or not 1 <= confirm_s <= 600:
        raise BadPart("part: confirm_s outside 1..600 seconds")
    try:
        data = base64.b64decode(_get(part, "data", str), validate=True)
    except ValueError:
        raise BadPart("part: data is not base64") from None
    part["confirm_s"] = confirm_s
    return part, data
