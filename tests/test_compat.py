"""Per-message compatibility: layout hashes, the core set, the known schemas, the codec by
layout, and hostd's judgement of a pod's HELLO (a fake pod on a real pty)."""
from __future__ import annotations

import asyncio

import pytest

from hypnolum.host.config import PodsConfig
from hypnolum.host.session import PodSession
from hypnolum.host.transport.serial import SerialTransport
from hypnolum.protocol import codec, compat, known_schemas, messages, schema, vectors

from helpers import other_firmware
from helpers.fake_pod import FakePod
from helpers.wait import wait_until

FAST = PodsConfig(heartbeat_timeout_s=0.6, ping_interval_s=0.1, connect_interval_s=0.1,
                  command_timeout_s=0.15, command_retries=2)

H = {m.name: m.layout_hash for m in schema.MESSAGES}
T = {m.name: m.type_id for m in schema.MESSAGES}


def _table(**changes: int | None) -> bytes:
    """This host's HELLO table with some messages' hashes changed (None: left out)."""
    layouts = {m.name: m.layout_hash for m in schema.MESSAGES}
    layouts.update(changes)
    return b"".join(compat.ENTRY.build({"type_id": T[n], "layout_hash": h}) for n, h in layouts.items() if h is not None)


N = len(schema.MESSAGES)  # entries in a whole table


def _hello(table: bytes = b"", fingerprint: int = schema.FINGERPRINT) -> dict:
    return {"fingerprint": fingerprint, "table": table}


def test_core_layouts_never_change():
    recorded = compat.recorded_core()
    assert set(recorded) == messages.CORE
    for name in messages.CORE:
        assert H[name] == recorded[name], f"{name}: a core message's layout may never change"
        for fp, table in compat.known().items():  # every released schema agrees (one from before
            # the update messages lacks them: it is used, not updated over the link)
            if name in messages.UPDATE_MESSAGES and T[name] not in table:
                continue
            assert table[T[name]] == (name, recorded[name]), f"{name} in schema {fp:#010x}"


def test_known_schemas_are_fresh_and_hold_this_schema():
    assert known_schemas.TARGET.read_text() == known_schemas.render(), "known_schemas.json is stale: run `make codec`"
    assert compat.known()[schema.FINGERPRINT] == {m.type_id: (m.name, m.layout_hash) for m in schema.MESSAGES}


def test_the_released_schema_is_recorded_as_its_commit_defines_it(tmp_path):
    tree = other_firmware.released_tree(other_firmware.BEFORE_TABLE, tmp_path / "old")
    fingerprint, table = other_firmware.layouts_of(tree / "protocol")
    assert compat.known()[fingerprint] == table


def test_a_layout_is_its_fields_not_its_tail_nor_its_enum_values():
    assert "table" not in schema.BY_NAME["hello"].layout_text()
    assert "detail" not in schema.BY_NAME["nack"].layout_text()
    assert "breathe" not in schema.BY_NAME["scene"].layout_text()
    assert "power 0x12" not in schema.BY_NAME["power"].layout_text()
    assert "temp_c16:int:h" in schema.BY_NAME["power"].layout_text()
    assert len({m.layout_hash for m in schema.MESSAGES}) == len(schema.MESSAGES)


def test_the_firmware_sends_this_hosts_table():
    text = (other_firmware.paths.FIRMWARE / "pod" / "wire.py").read_text()
    assert f"MESSAGE_TABLE = {compat.table_bytes()!r}" in text


def test_vectors_hold_a_hello_with_and_without_its_table():
    hellos = [v for v in vectors.load()["vectors"] if v["name"] == "hello"]
    tables = {v["case"]: bytes.fromhex(v["fields"]["table"]) for v in hellos}
    assert tables == {"min": b"", "typical": compat.table_bytes(), "max": tables["max"]}
    assert len(tables["max"]) == len(compat.table_bytes())  # every hash at 0xffff


@pytest.mark.parametrize("hello, refusal, unsupported", [
    (_hello(_table()), "", {}),
    (_hello(_table(fade_safe=None, power=0x1234), fingerprint=0xDEADBEEF), "",
     {"fade_safe": "not known to the pod", "power": f"layout differs: pod 0x1234, host {H['power']:#06x}"}),
    # released before the table: known by its fingerprint; before the update messages: used, not updatable
    (_hello(fingerprint=0x5B8BE72E), "", {n: "not known to the pod" for n in messages.UPDATE_MESSAGES}),
    (_hello(fingerprint=0xDEADBEEF), "unknown schema fingerprint 0xdeadbeef and no message table in HELLO", {}),
    (_hello(_table(ack=H["ack"] ^ 1)), f"core message ack: layout differs: pod {H['ack'] ^ 1:#06x}, "
                                       f"host {H['ack']:#06x}", None),
    (_hello(_table(connect=None)), "core message connect: not known to the pod", None),
    (_hello(_table() + _table()[:3]), f"hello.table: type 0x01 is listed twice (entry {N})", {}),
], ids=["same", "two-differ", "released", "unknown", "core-ack", "core-connect", "twice"])
def test_judge(hello, refusal, unsupported):
    verdict = compat.judge(hello)
    assert verdict.refusal == refusal
    if unsupported is not None:
        assert verdict.unsupported == unsupported
    if refusal:  # a refused pod's frames: only the host's core ones are read (a reflashed pod's HELLO)
        assert verdict.layouts == compat.CORE_LAYOUTS


def test_codec_goes_by_the_peers_layouts():
    peer = compat.parse_table(_table(power=0x1234, night_mode=None))
    night = {"mode": "on", "start_min": 0, "end_min": 0, "now_min": 0}
    with pytest.raises(codec.LayoutError, match="night_mode: not known to the peer"):
        codec.encode("night_mode", 1, night, layouts=peer)
    assert codec.decode(codec.encode("ack", 1, {"ack_seq": 1}, layouts=peer), layouts=peer).fields == {"ack_seq": 1}
    power = codec.encode("power", 7, {"temp_c16": 1, "vin_mv": 2, "limit_ma": 3, "full_ma": 4, "flags": 0})
    with pytest.raises(codec.LayoutError, match=rf"power \(seq 7\): layout differs: peer 0x1234, host {H['power']:#06x}"):
        codec.decode(power, layouts=peer)


def test_decoder_reads_only_core_before_hello_then_the_pods_layouts():
    hello = codec.encode("hello", 2, {"pod_id": "p", "fw_version": "1", "protocol_version": 1, "fingerprint": 1,
                                      "build_hash": 0, "boot_id": 0, "led_count": 1, "eeg_channels": 8,
                                      "sample_rate_hz": 250, "table": _table(power=0x1234)})
    power = codec.encode("power", 3, {"temp_c16": 1, "vin_mv": 2, "limit_ma": 3, "full_ma": 4, "flags": 0})
    log = codec.encode("log", 4, {"level": "info", "text": "hi"})
    dec = codec.FrameDecoder(by_hello=True)
    got = dec.feed(power + log + codec.encode("ack", 1, {"ack_seq": 0}) + hello + power + log + power)
    assert [f.name for f in got] == ["ack", "hello", "log"]
    assert (dec.before_hello, dec.unsupported, dec.errors) == (2, {"power": 2}, {})


async def _session(pod: FakePod):
    pod.plug()
    transport = SerialTransport(str(pod.link))
    await transport.open()
    session = PodSession(transport, FAST, "h")
    return session, transport, asyncio.create_task(session.run())


@pytest.mark.parametrize("table, reason", [
    (_table()[:-1], f"bad HELLO: hello.table: {3 * N - 1} bytes is not a whole number of 3-byte entries"),
    (_table(scene=None) + _table()[:3], f"hello.table: type 0x01 is listed twice (entry {N - 1})"),
    (_table(nack=H["nack"] ^ 0xFF), f"core message nack: layout differs: pod {H['nack'] ^ 0xFF:#06x}, "
                                    f"host {H['nack']:#06x}"),
    (_table(connect=None), "core message connect: not known to the pod"),  # hostd still asks it: CONNECT
], ids=["short", "twice", "nack", "connect"])
async def test_a_pod_with_a_bad_table_or_core_is_refused_and_hostd_goes_on(tmp_path, table, reason):
    pod = FakePod(tmp_path / "p.tty", pod_id="pod-t")
    pod.table = table
    session, transport, task = await _session(pod)
    try:
        await wait_until(lambda: session.state.link == "refused", what="refused")
        assert session.state.reason == reason
        pod.table = _table(group_value=None)  # reflashed: asked again, it comes online
        await wait_until(lambda: session.state.link == "online", what="online after reflash")
        assert session.state.unsupported == {"group_value": "not known to the pod"}
        assert await session.send("group_value", {"group_id": 1, "value": 2}) == -1  # not sent, counted
        assert session.state.counters.sends_unsupported == 1
        assert not [f for f in pod.received if f.name == "group_value"]
        assert await session.command("scene", {"effect": "off", "brightness": 0, "color": [0, 0, 0],
                                               "transition_ms": 0, "period_ms": 0, "palette": "warm",
                                               "flags": 0, "params": []}) == ("ack", None)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await transport.close()
        pod.unplug()
