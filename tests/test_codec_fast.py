"""The codec's struct fast paths (eeg_batch, eeg_bands) decode exactly as construct does."""
from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, strategies as st

from hypnolum.protocol import codec, vectors

FAST_NAMES = {"eeg_batch", "eeg_bands"}
VECTORS = [v for v in vectors.load()["vectors"] if v["name"] in FAST_NAMES]


def slow(frame: bytes) -> dict:
    body = codec.cobs.decode(frame[:-1])
    return codec._plain(codec._PARSERS[body[1]].parse(body[codec.HEADER_SIZE:-codec.CRC_SIZE]))


@pytest.mark.parametrize("v", VECTORS, ids=lambda v: f"{v['name']}-{v['case']}")
def test_fast_path_matches_construct_on_vectors(v):
    frame = bytes.fromhex(v["frame"])
    assert codec.decode(frame).fields == slow(frame)


@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 255), st.integers(0, 65535),
       st.integers(0, 65535), st.lists(st.floats(width=32, allow_nan=False), max_size=80))
def test_bands_fast_path_matches_construct(seq, ticks, ch, window, railed, powers):
    fields = {"last_seq": seq, "ticks_ms": ticks, "channels": ch, "window_ms": window, "railed": railed,
              "near_railed": railed ^ 0xFFFF, "powers": powers}
    frame = codec.encode("eeg_bands", 7, fields)
    assert codec.decode(frame).fields == slow(frame) == fields


@given(st.integers(1, 16), st.integers(0, 20), st.integers(0, 255), st.binary(min_size=0, max_size=16 * 3 * 20))
def test_batch_fast_path_and_counts(ch, n, flags, noise):
    samples = (noise * (1 + 3 * ch * n))[: 3 * ch * n] if noise else bytes(3 * ch * n)
    fields = {"first_seq": 5, "ticks_ms": 9, "channels": ch, "flags": flags, "samples": samples}
    frame = codec.encode("eeg_batch", 1, fields)
    got = codec.decode(frame).fields
    assert got == slow(frame) == fields
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
