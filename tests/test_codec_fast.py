"""The codec's generated struct decoders and encoders (protocol/fast.py) work exactly as
construct, the specification, does: on every shared vector, on random fields and payloads, on
random bytes (both refuse, or both give the same fields), and on values a field must not take."""
from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from hypnolum.protocol import codec, fast, gen_host, schema, vectors

FAST = [m for m in schema.MESSAGES if m.type_id in fast.DECODERS]
VECTORS = [v for v in vectors.load()["vectors"] if schema.BY_NAME[v["name"]].type_id in fast.DECODERS]


def slow(payload: bytes, msg: schema.Message) -> dict:
    return codec._plain(codec._PARSERS[msg.type_id].parse(payload))


def test_every_message_without_a_string_has_a_fast_decoder():
    strings = {m.name for m in schema.MESSAGES if any(f.kind == schema.STR for f in m.fields)}
    assert {m.name for m in FAST} == set(schema.BY_NAME) - strings
    assert {"eeg_batch", "eeg_bands", "status", "pong", "scene_shown"} <= {m.name for m in FAST}


@pytest.mark.parametrize("v", VECTORS, ids=lambda v: f"{v['name']}-{v['case']}")
def test_fast_decoder_matches_construct_on_vectors(v):
    frame = bytes.fromhex(v["frame"])
    body = codec.cobs.decode(frame[:-1])
    payload = body[codec.HEADER_SIZE:-codec.CRC_SIZE]
    assert fast.DECODERS[body[1]](payload) == slow(payload, schema.BY_TYPE[body[1]])
    assert codec.decode(frame).fields == slow(payload, schema.BY_TYPE[body[1]])


_RANGES = {c: (-(1 << (8 * struct.calcsize(c) - 1)), (1 << (8 * struct.calcsize(c) - 1)) - 1) for c in "bhiq"}
_RANGES.update({c: (0, (1 << (8 * struct.calcsize(c))) - 1) for c in "BHIQ"})


def _scalar(fmt: str) -> st.SearchStrategy:
    if fmt == "f":
        return st.floats(width=32, allow_nan=False)
    return st.integers(*_RANGES[fmt])


def _field(f: schema.Field) -> st.SearchStrategy:
    if f.kind == schema.INT:
        return _scalar(f.fmt)
    if f.kind == schema.ENUM:  # a known value by name, or a number this host may not know
        return st.sampled_from(list(schema.ENUMS[f.enum])) | _scalar(f.fmt)
    if f.kind == schema.ARRAY:
        return st.lists(_scalar(f.fmt), min_size=f.count, max_size=f.count)
    if f.kind == schema.LIST:
        return st.lists(_scalar(f.fmt), max_size=f.max_items + 3)
    return st.binary(max_size=40)


_PAYLOADS = st.sampled_from(FAST).flatmap(
    lambda m: st.tuples(st.just(m), st.fixed_dictionaries({f.name: _field(f) for f in m.fields})))


@settings(max_examples=400)
@given(_PAYLOADS)
def test_fast_decoder_matches_construct_on_random_fields(case):
    msg, fields = case
    payload = msg.construct.build(fields)
    assert fast.DECODERS[msg.type_id](payload) == slow(payload, msg)


@settings(max_examples=400)
@given(st.sampled_from(FAST), st.binary(max_size=48))
def test_fast_decoder_refuses_what_construct_refuses(msg, payload):
    try:
        want = slow(payload, msg)
    except codec.cs.ConstructError:
        with pytest.raises(struct.error):
            fast.DECODERS[msg.type_id](payload)
        return
    assert repr(fast.DECODERS[msg.type_id](payload)) == repr(want)  # repr: a NaN power equals itself


def test_generated_host_files_are_fresh():
    assert gen_host.VALUES_TARGET.read_text() == gen_host.render_values(), "protocol/values.py is stale: run `make codec`"
    assert gen_host.FAST_TARGET.read_text() == gen_host.render_fast(), "protocol/fast.py is stale: run `make codec`"


@given(st.integers(1, 16), st.integers(0, 20), st.integers(0, 255), st.binary(min_size=0, max_size=16 * 3 * 20))
def test_batch_fast_path_and_counts(ch, n, flags, noise):
    samples = (noise * (1 + 3 * ch * n))[: 3 * ch * n] if noise else bytes(3 * ch * n)
    fields = {"first_seq": 5, "ticks_ms": 9, "channels": ch, "flags": flags, "samples": samples}
    got = codec.decode(codec.encode("eeg_batch", 1, fields)).fields
    assert got == fields
    counts = codec.eeg_counts(got)
    ref = [int.from_bytes(samples[i:i + 3], "big", signed=True) for i in range(0, len(samples), 3)]
    assert counts.dtype == np.int32 and counts.shape == (n, ch) and counts.ravel().tolist() == ref


def test_truncated_bands_is_a_payload_error():
    frame = codec.encode("eeg_bands", 1, {"last_seq": 1, "ticks_ms": 2, "channels": 1, "window_ms": 3, "railed": 0,
                                          "near_railed": 0, "powers": [1.0, 2.0]})
    body = bytearray(codec.cobs.decode(frame[:-1]))
    body[codec.HEADER_SIZE + 15] = 3  # claims three powers, carries two
    body[-4:] = struct.pack("<I", codec.zlib.crc32(bytes(body[:-4])))
    with pytest.raises(codec.ProtocolError) as exc:
        codec.decode_body(bytes(body))
    assert exc.value.kind == "payload" and "eeg_bands" in str(exc.value)


ENCODABLE = [m for m in schema.MESSAGES if m.name in fast.ENCODERS]


def _codec_fields(v) -> dict:
    fields = dict(v["fields"])
    for f in schema.BY_NAME[v["name"]].fields:
        if f.kind == schema.BYTES:
            fields[f.name] = bytes.fromhex(fields[f.name])
    return fields


def test_every_message_without_a_string_has_a_fast_encoder():
    assert {m.name for m in ENCODABLE} == {m.name for m in FAST}


@pytest.mark.parametrize("v", VECTORS, ids=lambda v: f"{v['name']}-{v['case']}")
def test_fast_encoder_matches_construct_on_vectors(v):
    msg = schema.BY_NAME[v["name"]]
    fields = _codec_fields(v)
    assert fast.ENCODERS[msg.name](fields) == msg.construct.build(fields)
    assert codec.encode(v["name"], v["seq"], fields) == bytes.fromhex(v["frame"])


@settings(max_examples=400)
@given(_PAYLOADS)
def test_fast_encoder_matches_construct_on_random_fields(case):
    msg, fields = case
    try:
        want = msg.construct.build(fields)
    except (codec.cs.ConstructError, KeyError, TypeError, ValueError, struct.error):
        with pytest.raises((KeyError, TypeError, ValueError, struct.error)):
            fast.ENCODERS[msg.name](fields)
        return
    assert fast.ENCODERS[msg.name](fields) == want


def _wrong(f: schema.Field) -> st.SearchStrategy:
    # what a field must not take: out of range, a name no enum has, a wrong count, a wrong type
    lo, hi = _RANGES.get(f.fmt, (0, 0))
    bad_int = st.sampled_from([lo - 1, hi + 1, 1.5, "7", None]) if f.fmt != "f" else st.sampled_from(["x", None])
    if f.kind == schema.ENUM:
        return st.sampled_from(["no_such_name", lo - 1, hi + 1, None])
    if f.kind == schema.ARRAY:
        return st.sampled_from([[0] * (f.count - 1), [0] * (f.count + 1), [hi + 1] * f.count, "abc", None])
    if f.kind == schema.LIST:
        return st.sampled_from([["x"], None, 5] + ([[hi + 1]] if f.fmt != "f" else []))
    if f.kind == schema.BYTES:
        return st.sampled_from(["text", [1, 2, 3], None, 5])
    return bad_int


_SPOILED = st.sampled_from([m for m in FAST if m.fields]).flatmap(lambda m: st.tuples(
    st.just(m), st.fixed_dictionaries({f.name: _field(f) for f in m.fields}),
    st.sampled_from([f for f in m.fields]).flatmap(lambda f: st.tuples(st.just(f.name), _wrong(f)))))


@settings(max_examples=400)
@given(_SPOILED)
def test_fast_encoder_refuses_what_construct_refuses(case):
    msg, fields, (name, bad) = case
    fields = {**fields, name: bad}
    with pytest.raises((codec.cs.ConstructError, KeyError, TypeError, ValueError, struct.error)):
        msg.construct.build(fields)
    with pytest.raises((KeyError, TypeError, ValueError, struct.error)):
        fast.ENCODERS[msg.name](fields)
    with pytest.raises(codec.ProtocolError) as err:  # said as construct says it: what and where
        codec.encode_payload(msg.name, fields)
    assert err.value.kind in ("value", "payload")  # payload: a rule the codec checks first (leds, eeg_batch)
