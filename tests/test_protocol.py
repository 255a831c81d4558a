"""Host codec: round trips, vectors, staleness of generated files, resync."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hypnolum.protocol import codec, gen_firmware, gen_layout, schema, vectors

VECTORS = vectors.load()


def _meaning(v):
    msg = schema.BY_NAME[v["name"]]
    fields = dict(v["fields"])
    for f in msg.fields:
        if f.kind == schema.BYTES:
            fields[f.name] = bytes.fromhex(fields[f.name])
    return fields


def roundtrip(name, seq, fields):
    """Build, parse and size in one call (one helper for every message)."""
    frame = codec.encode(name, seq, fields)
    assert frame.endswith(b"\x00") and b"\x00" not in frame[:-1]
    assert len(frame) <= codec.MAX_ENCODED + 1
    back = codec.decode(frame)
    assert (back.name, back.seq, back.fields) == (name, seq, fields)
    return frame


@pytest.mark.parametrize("v", VECTORS["vectors"], ids=lambda v: f"{v['name']}-{v['case']}")
def test_vector_round_trip(v):
    frame = roundtrip(v["name"], v["seq"], _meaning(v))
    assert frame.hex() == v["frame"]


def test_every_message_has_vectors():
    assert {v["name"] for v in VECTORS["vectors"]} == set(schema.BY_NAME)


@pytest.mark.parametrize("bad", VECTORS["bad"], ids=lambda b: b["why"])
def test_bad_vectors_rejected_with_reason(bad):
    with pytest.raises(codec.ProtocolError) as err:
        codec.decode(bytes.fromhex(bad["frame"]))
    assert err.value.kind == bad["why"]


def test_generated_firmware_codec_is_fresh():
    assert gen_firmware.TARGET.read_text() == gen_firmware.render(), "firmware/pod/wire.py is stale: run `make codec`"
    assert gen_firmware.PEER_TARGET.read_text() == gen_firmware.render_peer(), \
        "tests/firmware/peer_wire.py is stale: run `make codec`"
    assert gen_layout.stale() == [], "firmware modules' wire layout constants are stale: run `make codec`"


def test_wire_layout_blocks_take_their_values_from_the_schema():
    # every module that writes a payload in place holds one; each constant names its fact
    held = {p.name for p in gen_layout.modules()}
    assert {"framing.py", "link.py", "cyton.py", "ring.py", "bands.py", "preview.py", "transfer.py"} <= held
    text = "\n".join([gen_layout.BEGIN, "_HDR = const(9)  # HEADER_SIZE", "_AT = const(0)  # scene_at.effect",
                      "_N = const(0)  # eeg_bands.powers", "_S = const(0)  # pong.size", gen_layout.END, ""])
    assert gen_layout.render_module(text, "t.py").split("\n")[1:5] == [
        "_HDR = const(4)  # HEADER_SIZE", "_AT = const(4)  # scene_at.effect", "_N = const(15)  # eeg_bands.powers",
        "_S = const(20)  # pong.size"]
    for fact, says in (("scene.nope", "no field 'nope'"), ("eeg_batch.size", "variable fields"),
                       ("scene.flags.x", "no field"), ("NOPE", "neither")):
        with pytest.raises(gen_layout.LayoutError, match=says):
            gen_layout.render_module(f"{gen_layout.BEGIN}\n_X = const(1)  # {fact}\n{gen_layout.END}", "t.py")


def test_vectors_file_is_fresh():
    assert vectors.TARGET.read_text() == vectors.render(), "protocol/vectors.json is stale: run `make codec`"


def test_fingerprint_is_in_every_artifact():
    fp = f"{schema.FINGERPRINT:#010x}"
    assert VECTORS["fingerprint"] == fp
    assert f"FINGERPRINT = const({fp})" in gen_firmware.TARGET.read_text()


def test_fingerprint_covers_field_types():
    text = schema.schema_text()
    assert "fingerprint:int:I" in text and "samples:bytes" in text
    # enum values are not part of it, so adding an effect keeps old pods talking
    assert "breathe" not in text


def test_encode_rejects_out_of_range_with_field_name():
    with pytest.raises(codec.ProtocolError) as err:
        codec.encode("ack", 1, {"ack_seq": 70000})
    assert err.value.kind == "value" and "ack" in str(err.value)
    with pytest.raises(codec.ProtocolError, match="params"):
        codec.encode("scene", 1, dict(effect="off", brightness=0, color=[0, 0, 0], transition_ms=0, period_ms=0, palette="warm", flags=0, params=[0] * 9))


def test_eeg_batch_must_hold_whole_samples():
    with pytest.raises(codec.ProtocolError, match="samples"):
        codec.encode("eeg_batch", 1, dict(first_seq=0, ticks_ms=0, channels=8, flags=0, samples=b"\x00" * 25))


def test_eeg_counts_are_signed_24_bit():
    f = dict(first_seq=0, ticks_ms=0, channels=2, flags=0, samples=bytes.fromhex("7fffff800000ffffff000001"))
    counts = codec.eeg_counts(codec.decode(codec.encode("eeg_batch", 1, f)).fields)
    assert counts.tolist() == [[8388607, -8388608], [-1, 1]]


GOOD = [bytes.fromhex(v["frame"]) for v in VECTORS["vectors"]]


@settings(max_examples=300, deadline=None)
@given(garbage=st.binary(max_size=2000), frame=st.sampled_from(GOOD), split=st.integers(1, 64))
def test_resync_after_garbage(garbage, frame, split):
    """Garbage costs at most the one frame it runs into; the next frame decodes."""
    dec = codec.FrameDecoder()
    stream = garbage + frame + frame
    got = []
    for i in range(0, len(stream), split):  # arbitrary read boundaries
        got += dec.feed(stream[i : i + split])
    want = codec.decode(frame)
    assert got and got[-1] == want
    assert dec.frames == len(got)


def test_decoder_counts_errors_and_keeps_going():
    dec = codec.FrameDecoder()
    out = []
    for bad in VECTORS["bad"]:
        out += dec.feed(bytes.fromhex(bad["frame"]))
    out += dec.feed(GOOD[0])
    assert len(out) == 1
    assert sum(dec.errors.values()) == len(VECTORS["bad"])
    assert set(dec.errors) == {b["why"] for b in VECTORS["bad"]}
