"""Host codec: frames <-> messages, with the construct definitions.

Wire format of one frame::

    COBS( version:u8 | type:u8 | seq:u16 | payload | crc32:u32 ) 0x00

The CRC is CRC-32/IEEE (zlib.crc32) over header + payload, little-endian.
COBS removes every 0x00 from the frame, so a 0x00 always ends a frame and a
receiver that starts mid-stream, or meets garbage, is back in step at the
next delimiter.

Both directions can go by the layouts the peer speaks (protocol/compat.py):
given ``layouts`` ({type id: layout hash}), a message whose hash differs from
this host's definition is neither built nor parsed (``LayoutError``), so no
frame is read with the wrong layout. ``FrameDecoder(by_hello=True)`` takes them
from the pod's HELLO.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

import construct as cs
from cobs import cobs

from . import compat, fast, messages, schema
from .schema import BY_NAME, BY_TYPE, FINGERPRINT  # noqa: F401  (re-exported)

PROTOCOL_VERSION = messages.PROTOCOL_VERSION
MAX_FRAME = messages.MAX_FRAME
HEADER_SIZE = messages.HEADER_SIZE
CRC_SIZE = messages.CRC_SIZE
MAX_PAYLOAD = MAX_FRAME - HEADER_SIZE - CRC_SIZE
# COBS adds one byte per 254 plus one; the delimiter is not counted.
MAX_ENCODED = MAX_FRAME + MAX_FRAME // 254 + 1

_HEADER = struct.Struct("<BBH")
_CRC = struct.Struct("<I")


class ProtocolError(ValueError):
    """A frame or message that cannot be encoded or decoded.

    ``kind`` is a short counter name (crc, cobs, short, oversize, version,
    unknown_type, payload, value, layout); the message says what and where.
    ``message`` names the message when the header was read ("" before that).
    """

    def __init__(self, kind: str, message: str, name: str = ""):
        super().__init__(message)
        self.kind = kind
        self.message = name


class LayoutError(ProtocolError):
    """A message the peer lays out otherwise than this host (or does not know)."""

    def __init__(self, msg: schema.Message, peer: int | None, seq: int | None = None):
        where = "" if seq is None else f" (seq {seq})"
        why = "not known to the peer" if peer is None else \
            f"layout differs: peer {peer:#06x}, host {msg.layout_hash:#06x}"
        super().__init__("layout", f"{msg.name}{where}: {why}", msg.name)
        self.type_id = msg.type_id


@dataclass(frozen=True)
class Frame:
    name: str
    type_id: int
    seq: int
    fields: dict[str, Any]
    version: int = PROTOCOL_VERSION


def _plain(value: Any) -> Any:
    """construct containers -> plain dicts, lists and strs."""
    if isinstance(value, cs.Container):
        return {k: _plain(v) for k, v in value.items() if not k.startswith("_")}
    if isinstance(value, cs.ListContainer | list):
        return [_plain(v) for v in value]
    if isinstance(value, cs.EnumIntegerString):
        return str(value)
    if isinstance(value, cs.EnumInteger):
        return int(value)
    return value


def _parser(msg: schema.Message) -> cs.Construct:
    return cs.Struct(*msg.construct.subcons, cs.Terminated)


_PARSERS = {m.type_id: _parser(m) for m in schema.MESSAGES}

# Messages of fixed fields (and perhaps a bytes or list tail), nearly all traffic (EEG
# batches and bands, status, pongs; pings, group values, frame phases), decode and encode by
# struct: protocol/fast.py, generated from the definitions (protocol/gen_host.py);
# tests/test_codec_fast.py holds each to construct.
_FAST = fast.DECODERS
_FAST_ENCODE = fast.ENCODERS


def _check(msg: schema.Message, fields: dict[str, Any]) -> None:
    """Rules the definitions cannot express."""
    for f in msg.fields:
        if f.kind == schema.LIST and len(fields[f.name]) > f.max_items:
            raise ProtocolError("value", f"{msg.name}.{f.name}: at most {f.max_items} items")
        tail = messages.TAILS.get((msg.name, f.name))
        if tail is not None and len(fields[f.name]) not in (0, tail.sizeof()):
            raise ProtocolError("payload", f"{msg.name}.{f.name}: {len(fields[f.name])} bytes, "
                                           f"expected 0 or {tail.sizeof()}", msg.name)
        run = messages.TAIL_RUNS.get((msg.name, f.name))
        if run is not None and len(fields[f.name]) % run.sizeof():
            raise ProtocolError("payload", f"{msg.name}.{f.name}: {len(fields[f.name])} bytes is not a whole "
                                           f"number of {run.sizeof()}-byte entries", msg.name)
    if msg.name == "eeg_batch":
        ch = fields["channels"]
        if ch == 0 or len(fields["samples"]) % (3 * ch):
            raise ProtocolError(
                "payload", f"eeg_batch.samples: {len(fields['samples'])} bytes is not a whole number of {ch}-channel samples"
            )
    elif msg.name == "leds":
        k = fields["segments"]
        if not 1 <= k <= messages.LED_PREVIEW_MAX_SEGMENTS or len(fields["rgb"]) != 3 * k:
            raise ProtocolError("payload", f"leds: {k} segments (1..{messages.LED_PREVIEW_MAX_SEGMENTS}) "
                                           f"with {len(fields['rgb'])} bytes of rgb")


def _with_tails(name: str, fields: dict[str, Any]) -> dict[str, Any]:
    """fields, with an absent tail field (messages.TAILS, TAIL_RUNS) empty."""
    for msg, tail in schema.TAIL_FIELDS:
        if msg == name and tail not in fields:
            return {**fields, tail: b""}
    return fields


def _layout_ok(msg: schema.Message, layouts: dict[int, int] | None, seq: int | None = None) -> None:
    """Raise LayoutError unless the peer (``layouts``; None: this host's own) shares msg's layout."""
    if layouts is not None:
        peer = layouts.get(msg.type_id)
        if peer != msg.layout_hash:
            raise LayoutError(msg, peer, seq)


def encode_payload(name: str, fields: dict[str, Any], layouts: dict[int, int] | None = None) -> bytes:
    msg = BY_NAME.get(name)
    if msg is None:
        raise ProtocolError("unknown_type", f"unknown message {name!r}")
    _layout_ok(msg, layouts)
    fields = _with_tails(name, fields)
    try:
        _check(msg, fields)
    except (KeyError, TypeError) as exc:
        raise ProtocolError("value", f"{name}: {exc!r}") from None
    payload = None
    fast_encode = _FAST_ENCODE.get(name)
    if fast_encode is not None:
        try:
            payload = fast_encode(fields)
        except (KeyError, TypeError, ValueError, struct.error):
            pass  # construct, the specification, refuses it too and says where
    try:
        if payload is None:
            payload = msg.construct.build(fields)
    except (cs.ConstructError, KeyError, TypeError, ValueError, struct.error) as exc:
        raise ProtocolError("value", f"{name}: {exc}") from None
    if len(payload) > MAX_PAYLOAD:
        raise ProtocolError("oversize", f"{name}: payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    return payload


def encode(name: str, seq: int, fields: dict[str, Any], version: int = PROTOCOL_VERSION,
           layouts: dict[int, int] | None = None) -> bytes:
    """One complete frame, COBS-encoded, with its 0x00 delimiter; for a peer that speaks
    ``layouts``, only a message it lays out as this host does (else LayoutError)."""
    payload = encode_payload(name, fields, layouts)  # checks the name first
    body = _HEADER.pack(version, BY_NAME[name].type_id, seq & 0xFFFF) + payload
    body += _CRC.pack(zlib.crc32(body))
    return cobs.encode(body) + b"\x00"


def decode_body(body: bytes, layouts: dict[int, int] | None = None) -> Frame:
    """Decode the COBS-decoded bytes of one frame (header + payload + CRC); from a peer
    that speaks ``layouts``, only a message it lays out as this host does (else LayoutError)."""
    if len(body) < HEADER_SIZE + CRC_SIZE:
        raise ProtocolError("short", f"frame of {len(body)} bytes is shorter than header and CRC")
    if len(body) > MAX_FRAME:
        raise ProtocolError("oversize", f"frame of {len(body)} bytes exceeds {MAX_FRAME}")
    (crc,) = _CRC.unpack_from(body, len(body) - CRC_SIZE)
    if zlib.crc32(memoryview(body)[:-CRC_SIZE]) != crc:
        raise ProtocolError("crc", f"CRC mismatch in a {len(body)}-byte frame")
    version, type_id, seq = _HEADER.unpack_from(body)
    if version != PROTOCOL_VERSION:
        raise ProtocolError("version", f"protocol version {version}, expected {PROTOCOL_VERSION}")
    msg = BY_TYPE.get(type_id)
    if msg is None:
        raise ProtocolError("unknown_type", f"unknown message type {type_id:#04x} (seq {seq})")
    _layout_ok(msg, layouts, seq)
    decoder = _FAST.get(type_id)
    try:
        if decoder is not None:
            fields = decoder(body[HEADER_SIZE:-CRC_SIZE])
        else:
            fields = _plain(_PARSERS[type_id].parse(body[HEADER_SIZE:-CRC_SIZE]))
    except (cs.ConstructError, struct.error) as exc:
        raise ProtocolError("payload", f"{msg.name} (seq {seq}): {exc}", msg.name) from None
    _check(msg, fields)
    return Frame(msg.name, type_id, seq, fields, version)


def decode(frame: bytes, layouts: dict[int, int] | None = None) -> Frame:
    """Decode one frame as it is on the wire (with or without its delimiter)."""
    if frame.endswith(b"\x00"):
        frame = frame[:-1]
    try:
        body = cobs.decode(frame)
    except cobs.DecodeError as exc:
        raise ProtocolError("cobs", f"bad COBS encoding: {exc}") from None
    return decode_body(body, layouts)


@dataclass
class FrameDecoder:
    """Stream decoder: feed bytes, get frames; bad frames are counted, never fatal.

    By default it decodes by this host's layouts (or by ``layouts``, if given). With
    ``by_hello`` (a host reading a pod) it decodes by what the pod's HELLO says: until
    the first HELLO only core messages (the others are dropped and counted in
    ``before_hello``), then the layouts that HELLO names (compat.decode_layouts). A
    frame of a message the pod lays out otherwise is dropped and counted in
    ``unsupported`` by message name, never parsed with the wrong layout."""

    errors: dict[str, int] = field(default_factory=dict)
    frames: int = 0
    last_error: str = ""
    last_failed: str = ""  # the message the last bad frame held ("" if its header was not read)
    layouts: dict[int, int] | None = None  # None: this host's own (no HELLO yet)
    unsupported: dict[str, int] = field(default_factory=dict)
    by_hello: bool = False
    before_hello: int = 0
    _hello_seen: bool = False
    _buf: bytearray = field(default_factory=bytearray)
    _skipping: bool = False  # inside an oversize run already counted

    def __post_init__(self) -> None:
        if self.by_hello:
            self.layouts = dict(compat.CORE_LAYOUTS)

    def _fail(self, exc: ProtocolError) -> None:
        if isinstance(exc, LayoutError):
            if self.by_hello and not self._hello_seen:
                self.before_hello += 1
                return
            self.unsupported[exc.message] = self.unsupported.get(exc.message, 0) + 1
            return
        self.errors[exc.kind] = self.errors.get(exc.kind, 0) + 1
        self.last_error = str(exc)
        self.last_failed = exc.message

    def feed(self, data: bytes) -> list[Frame]:
        out: list[Frame] = []
        buf = self._buf
        buf += data
        start = 0
        while True:
            end = buf.find(0, start)
            if end < 0:
                break
            chunk = bytes(buf[start:end])
            start = end + 1
            if self._skipping:
                self._skipping = False  # the tail of garbage already counted
                continue
            if not chunk:
                continue  # idle delimiters
            try:
                if len(chunk) > MAX_ENCODED:
                    raise ProtocolError("oversize", f"{len(chunk)} bytes without a delimiter")
                frame = decode(chunk, self.layouts)
                if self.by_hello and frame.name == "hello":  # what the pod speaks from now on
                    self.layouts = compat.decode_layouts(frame.fields)
                    self._hello_seen = True
                out.append(frame)
                self.frames += 1
            except ProtocolError as exc:
                self._fail(exc)
        del buf[:start]
        if len(buf) > MAX_ENCODED:
            # no delimiter within a maximum frame: garbage; resync at the next 0x00
            if not self._skipping:
                self._fail(ProtocolError("oversize", f"{len(buf)} bytes without a delimiter"))
            self._skipping = True
            buf.clear()
        return out


def eeg_counts(fields: dict[str, Any]):
    """EEG batch samples as an (n_samples, channels) int32 array of ADC counts."""
    import numpy as np

    raw = np.frombuffer(fields["samples"], dtype=np.uint8).reshape(-1, 3)
    # each value as the top three bytes of a big-endian int32; the arithmetic shift extends the sign
    wide = np.zeros((len(raw), 4), dtype=np.uint8)
    wide[:, :3] = raw
    return (wide.view(">i4")[:, 0] >> 8).astype(np.int32).reshape(-1, fields["channels"])
