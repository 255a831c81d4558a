"""An update's manifest and its tag: what a pod checks before it takes a new build (docs/update.md).

The manifest names the build and each file of the slot, in the order the
files' bytes are sent (their paths' order, as :attr:`Bundle.slot` holds them)::

    magic "HLU1" | version u8 = 1 | build hash u32 LE | file count u16 LE
    per file: path length u8 | path (UTF-8, inside the slot) | size u32 LE | sha256 (32 bytes)

The tag is HMAC-SHA256(update key, manifest). The bytes sent are the files
concatenated in manifest order (:func:`payload`); a chunk starts at a multiple
of :data:`CHUNK_ALIGN` and is a multiple of it long unless it ends the payload,
at most :data:`MAX_CHUNK` bytes. firmware/pod/update.py is the pod's side.
"""
from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass

from .bundle import Bundle

MAGIC = b"HLU1"
VERSION = 1
CHUNK_ALIGN = 64  # firmware/pod/update.py BLOCK
MAX_CHUNK = 1024  # firmware/pod/update.py MAX_CHUNK
MAX_MANIFEST = 8192  # firmware/pod/update.py MAX_MANIFEST
_HEAD = struct.Struct("<4sBIH")
_ENTRY = struct.Struct("<I32s")


@dataclass(frozen=True)
class Entry:
    path: str
    size: int
    sha256: bytes


class ManifestError(ValueError):
    """Not a manifest; the message says where."""


def encode(bundle: Bundle) -> bytes:
    """The manifest of a bundle's slot files."""
    out = bytearray(_HEAD.pack(MAGIC, VERSION, bundle.build_hash, len(bundle.slot)))
    for f in bundle.slot:
        path = f.path.encode()
        out += bytes([len(path)]) + path + _ENTRY.pack(len(f.data), hashlib.sha256(f.data).digest())
    if len(out) > MAX_MANIFEST:
        raise ManifestError(f"manifest of {len(bundle.slot)} files is {len(out)} bytes, more than {MAX_MANIFEST}")
    return bytes(out)


def decode(data: bytes) -> tuple[int, list[Entry]]:
    """(build hash, entries) of a manifest."""
    if len(data) < _HEAD.size:
        raise ManifestError(f"manifest: {len(data)} bytes, shorter than its {_HEAD.size}-byte header")
    magic, version, build, count = _HEAD.unpack_from(data)
    if magic != MAGIC or version != VERSION:
        raise ManifestError(f"manifest: starts {data[:5]!r}, expected {MAGIC!r} version {VERSION}")
    entries = []
    pos = _HEAD.size
    for i in range(count):
        if pos >= len(data):
            raise ManifestError(f"manifest: file {i} of {count} missing at byte {pos}")
        n = data[pos]
        end = pos + 1 + n + _ENTRY.size
        if end > len(data):
            raise ManifestError(f"manifest: file {i} truncated at byte {len(data)}")
        size, sha = _ENTRY.unpack_from(data, pos + 1 + n)
        entries.append(Entry(data[pos + 1:pos + 1 + n].decode(), size, sha))
        pos = end
    if pos != len(data):
        raise ManifestError(f"manifest: {len(data) - pos} bytes after the last file")
    return build, entries


def payload(bundle: Bundle) -> bytes:
    """The bytes an update sends: the slot files concatenated in manifest order."""
    return b"".join(f.data for f in bundle.slot)


def tag(key: bytes, manifest: bytes) -> bytes:
    """HMAC-SHA256(key, manifest)."""
    return hmac.new(key, manifest, hashlib.sha256).digest()
