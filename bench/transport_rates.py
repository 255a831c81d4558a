"""Per transport, in the emulator: EEG samples/s sustained, command round trip, link margin.

Each transport's function runs emulated pods (the real firmware, 8 channels at
250 Hz) linked over that transport to one hostd (its own hub, session and MQTT
bridge, against a private mosquitto) and returns a row:

* EEG samples/s sustained: samples hostd handed on in order, all pods together,
  over the window (and what 8 ch x 250 Hz per pod should give);
* command round trip p50/p99: a scene command from hostd's session to the pod's
  ACK, one at a time, round robin over the pods, while they stream;
* lowest link margin: 100 % minus the largest share of the link's capacity used
  in any 1 s of the window.

Serial: the pods' CDC link functions as ttys (the emulator's ptys), through hostd's
port scanner and pyserial; capacity as for USB below, every pod's bytes on one bus.

USB: the pods' vendor interfaces (pod.json ``usb_link: "vendor"``) on one
full-speed bus, read through pyusb over tests/helpers/fake_usb.py. Capacity is
the emulator's full-speed model, 19 bulk packets per 1 ms frame (USB 2.0
5.8.4, table 5-9): every pod's packets, both ways, count against one bus, as
behind one full-speed root port or a single-TT hub. The target is 16 pods with
>= 50 % margin.

BLE: one pod (one central holds one pod's link), whose radio is emulator/ble_radio.py with its link timing (connection interval,
notifications per connection event, the negotiated ATT MTU), so capacity = packets per
event x (MTU - 3) / interval; the pod's traffic is every notification byte (EEG, band powers,
status, LED previews). The central bonds first (the pod's pairing window is open at boot).

    .venv/bin/python bench/transport_rates.py [--transports serial,usb,ble] [--pods 16] [--seconds 20] [--commands 60]
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from hypnolum.broker import PrivateBroker  # noqa: E402
from hypnolum.emulator.runner import Emulator  # noqa: E402
from hypnolum.host.commands import SceneSpec  # noqa: E402
from hypnolum.protocol import codec  # noqa: E402

RATE_HZ = 250
CHANNELS = 8
USB_PACKETS_PER_S = 19 * 1000  # the emulator's full-speed bus: 19 bulk packets per 1 ms frame


@dataclass
class Row:
    transport: str
    pods: int
    samples_per_s: float
    expected_per_s: float
    samples_lost: int
    rtt_p50_ms: float
    rtt_p99_ms: float
    margin_pct: float  # lowest, over 1 s windows
    note: str = ""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def print_table(rows: list[Row]) -> None:
    print("transport | pods | EEG samples/s sustained (expected) | lost | command RTT p50/p99 ms"
          " | lowest link margin %")
    for r in rows:
        print(f"{r.transport} | {r.pods} | {r.samples_per_s:.0f} ({r.expected_per_s:.0f}) | {r.samples_lost} | "
              f"{r.rtt_p50_ms:.1f} / {r.rtt_p99_ms:.1f} | {r.margin_pct:.1f}" + (f"  ({r.note})" if r.note else ""))


async def command_rtts(sessions: list, n: int) -> list[float]:
    """Scene commands from hostd's sessions, one at a time, round robin over the pods:
    seconds from the send to the pod's ACK (the link both ways and the pod's handling)."""
    rtts: list[float] = []
    for i, session in zip(range(n), itertools.cycle(sessions)):
        fields = SceneSpec(effect="solid", color=(0, (i * 37) % 200 + 20, 0), transition_ms=0).fields()
        t0 = time.monotonic()
        answer, reason = await session.command("scene", fields)
        if answer != "ack":
            raise SystemExit(f"{session.transport.name}: scene command refused: {reason}")
        rtts.append(time.monotonic() - t0)
        await asyncio.sleep(0.05)
    return rtts


def _pod_counter(session, name: str) -> int:
    """A counter from the pod's own STATUS, as hostd holds it (pods/<id>/state)."""
    return ((session.state.to_json().get("counters") or {}).get("pod") or {}).get(name, -1)


# -- serial -------------------------------------------------------------------------
async def serial_rates(pods: int, seconds: float, commands: int, workdir: Path) -> Row:
    """The pods' CDC link functions (pod.json ``usb_link: "cdc"``, the default) as ttys,
    found by hostd's port scanner: the serial transport (pyserial) over the emulator's ptys."""
    from hypnolum.host.config import parse
    from hypnolum.host.hub import Hub
    from hypnolum.host.mqtt import MqttBridge
    from hypnolum.host.ports import PortScanner

    with PrivateBroker(workdir / "broker") as broker:
        async with Emulator(pods, workdir / "emu", seed=11, led_count=16) as emu:
            await emu.wait_links(60)
            cfg = parse({
                "host": {"id": "bench-serial"},
                "mqtt": {"port": broker.port, "keepalive": 5, "discovery": False},
                "serial": {"ports": [str(workdir / "emu" / "*.tty")], "scan_interval_s": 0.2},
                "pods": {"heartbeat_timeout_s": 1.0, "ping_interval_s": 0.2, "connect_interval_s": 0.1,
                         "command_timeout_s": 0.5, "command_retries": 3},
            })
            bridge = MqttBridge(cfg)
            hub = Hub(cfg, bridge)
            tasks = [asyncio.create_task(t) for t in (bridge.run(), hub.serve_commands(),
                                                      PortScanner(cfg.serial, hub.serve_port).run())]
            pod_ids = [p.pod_id for p in emu.pods]

            def link_bytes() -> int:
                return sum(p.counters.link_to_pod_bytes + p.counters.link_to_host_bytes for p in emu.pods)

            try:
                deadline = time.monotonic() + 60 + 3 * pods
                while not all(p in hub.pods and hub.pods[p].state.link == "online" for p in pod_ids):
                    if time.monotonic() > deadline:
                        raise SystemExit(f"serial: pods not online: {sorted(set(pod_ids) - set(hub.pods))}")
                    await asyncio.sleep(0.2)
                await asyncio.sleep(3.0)  # replays and the first bursts settle
                streams = [hub.eeg.streams[p] for p in pod_ids]
                samples0 = sum(s.stats.samples for s in streams)
                lost0 = sum(s.stats.samples_lost for s in streams)
                t0 = time.monotonic()
                rtt_task = asyncio.create_task(command_rtts([hub.pods[p] for p in pod_ids], commands))
                usage: list[float] = []
                while time.monotonic() - t0 < seconds or not rtt_task.done():
                    b0, w0 = link_bytes(), time.monotonic()
                    await asyncio.sleep(1.0)
                    usage.append((link_bytes() - b0) / (time.monotonic() - w0) / (USB_PACKETS_PER_S * 64))
                elapsed = time.monotonic() - t0
                rtts = await rtt_task
                samples = sum(s.stats.samples for s in streams) - samples0
                lost = sum(s.stats.samples_lost for s in streams) - lost0
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await bridge.close()
    return Row("serial (CDC)", pods, samples / elapsed, pods * RATE_HZ, lost,
               percentile(rtts, 0.5) * 1000, percentile(rtts, 0.99) * 1000, 100 * (1 - max(usage)),
               f"{max(usage) * 100 / pods:.2f} % of one full-speed bus (19 x 64 B per ms) per pod at the busiest second")


# -- USB ----------------------------------------------------------------------------
def _usb_packets(bus) -> int:
    return sum(d.in_packets + d.out_packets for d in bus.devices.values())


async def _usb_wait_online(hostd, pod_ids: list[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not all(p in hostd.hub.pods and hostd.hub.pods[p].state.link == "online" for p in pod_ids):
        if time.monotonic() > deadline:
            missing = sorted(set(pod_ids) - set(hostd.hub.pods))
            raise SystemExit(f"usb: pods not online within {timeout_s:.0f} s: {missing}")
        await asyncio.sleep(0.2)


async def usb_rates(pods: int, seconds: float, commands: int, workdir: Path) -> Row:
    from helpers.fake_usb import UsbBus
    from helpers.usb_hostd import UsbHostd, usb_config

    with PrivateBroker(workdir / "broker") as broker:
        async with Emulator(pods, workdir / "emu", seed=11, led_count=16, usb_link="vendor") as emu:
            await emu.wait_links(60)
            bus = UsbBus(workdir / "emu")
            pod_ids = [p.pod_id for p in emu.pods]
            try:
                async with UsbHostd(usb_config(broker.port, "bench-usb"), bus.backend()) as hostd:
                    await _usb_wait_online(hostd, pod_ids, 60 + 3 * pods)
                    await asyncio.sleep(3.0)  # replays and the first bursts settle
                    streams = [hostd.hub.eeg.streams[p] for p in pod_ids]
                    samples0 = sum(s.stats.samples for s in streams)
                    lost0 = sum(s.stats.samples_lost for s in streams)
                    t0 = time.monotonic()
                    sessions = [hostd.hub.pods[p] for p in pod_ids]
                    rtt_task = asyncio.create_task(command_rtts(sessions, commands))
                    usage: list[float] = []
                    while time.monotonic() - t0 < seconds or not rtt_task.done():
                        p0, w0 = _usb_packets(bus), time.monotonic()
                        await asyncio.sleep(1.0)
                        usage.append((_usb_packets(bus) - p0) / (time.monotonic() - w0) / USB_PACKETS_PER_S)
                    elapsed = time.monotonic() - t0
                    rtts = await rtt_task
                    samples = sum(s.stats.samples for s in streams) - samples0
                    lost = sum(s.stats.samples_lost for s in streams) - lost0
                    lost_bytes = sum(d.lost_bytes for d in bus.devices.values())
                    mem_free = min(_pod_counter(hostd.hub.pods[p], "mem_free") for p in pod_ids)
            finally:
                bus.close()
    return Row("usb (vendor)", pods, samples / elapsed, pods * RATE_HZ, lost,
               percentile(rtts, 0.5) * 1000, percentile(rtts, 0.99) * 1000, 100 * (1 - max(usage)),
               f"{max(usage) * 100 / pods:.2f} % of the bus per pod at the busiest second; "
               f"bulk bytes lost to read timeouts: {lost_bytes}; lowest pod mem_free {mem_free} B")


# -- BLE ----------------------------------------------------------------------------
def eeg_bytes_per_s(channels: int = CHANNELS, rate_hz: int = RATE_HZ, batch_ms: int = 40) -> float:
    """Wire bytes a second of EEG takes: eeg_batch frames (COBS, delimiter, header, CRC) of
    batch_ms of samples each, sample values random (COBS adds its worst near that)."""
    import os

    n = rate_hz * batch_ms // 1000
    frame = codec.encode("eeg_batch", 1, {"first_seq": 1, "ticks_ms": 1, "channels": channels, "flags": 0,
                                           "samples": os.urandom(3 * channels * n)})
    return len(frame) * rate_hz / n


def _ble_hub_config(port: int):
    from hypnolum.host.config import parse

    return parse({
        "host": {"id": "bench"},
        "mqtt": {"port": port, "keepalive": 5, "discovery": False},
        "ble": {"reconnect_min_s": 0.2, "reconnect_max_s": 0.5, "connect_timeout_s": 5},
        "pods": {"heartbeat_timeout_s": 3, "ping_interval_s": 0.5, "connect_interval_s": 0.1,
                 "command_timeout_s": 1, "command_retries": 3},
    })


async def _night_rtts(hub, pod_id: str, n: int) -> list[float]:
    out = []
    fields = {"mode": "off", "start_min": 0, "end_min": 0, "now_min": 0}
    for _ in range(n):
        session = hub.pods[pod_id]
        t = time.perf_counter()
        answer, reason = await session.command("night_mode", fields)
        if answer != "ack":
            raise RuntimeError(f"night_mode answered {answer} {reason}")
        out.append((time.perf_counter() - t) * 1000)
    return out


async def _until(pred, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def ble_rates(pods: int, seconds: float, commands: int, workdir: Path) -> Row:
    """The BLE transport: hostd's BleTransport over a bumble central, the pod's own GATT code (one pod)."""
    with PrivateBroker(workdir / "broker") as broker:
        return await _ble_rates(workdir, broker.port, seconds, commands)


async def _ble_rates(work: Path, port: int, seconds: float, commands: int) -> Row:
    from bumble.link import LocalLink

    from hypnolum.host.hub import Hub
    from hypnolum.host.mqtt import MqttBridge

    from hypnolum.emulator.ble_radio import PodRadio
    from hypnolum.emulator.pod import EmulatedPod, PodConfig
    from hypnolum.host.transport.ble import ATT_HEADER, supervise

    from helpers.ble_peer import BumbleGattLink, CentralKeyStore

    link = LocalLink()
    d = work / "pod-01"
    d.mkdir(parents=True)
    (d / "ble_pair.flag").write_bytes(b"1")
    pod = EmulatedPod("pod-01", d, seed=1, ble_link=link,
                      config=PodConfig(pod_id="pod-01", led_count=16, ble=True, eeg_channels=CHANNELS))
    await pod.start()
    pod.unplug(detach=True)  # no USB host: BLE carries the link
    radio: PodRadio = pod.ble
    cfg = _ble_hub_config(port)
    bridge = MqttBridge(cfg)
    hub = Hub(cfg, bridge)
    keys = CentralKeyStore()
    mtu = 247
    tasks = [asyncio.create_task(bridge.run()), asyncio.create_task(hub.serve_commands()),
             asyncio.create_task(supervise(radio.address, cfg.ble, hub.serve,
                                           lambda _a: BumbleGattLink(link, radio.address, want_mtu=mtu, keystore=keys)))]
    try:
        await _until(lambda: "pod-01" in hub.pods and hub.eeg.streams.get("pod-01"), 30, "online over BLE")
        await asyncio.sleep(2)  # past the start: the ring's first replay, the first band powers
        stream = hub.eeg.streams["pod-01"]
        capacity = radio.pkts_per_event * (mtu - ATT_HEADER) / radio.interval_s  # B/s
        used = []
        s0, t0 = stream.stats.samples, time.monotonic()
        b_last, t_last = radio.notified_bytes, t0
        mem_low = None
        while time.monotonic() - t0 < seconds:
            await asyncio.sleep(1.0)
            free = hub.pods["pod-01"].state.pod_status.get("mem_free")
            mem_low = free if mem_low is None or (free and free < mem_low) else mem_low
            now = time.monotonic()
            used.append((radio.notified_bytes - b_last) / (now - t_last) / capacity)
            b_last, t_last = radio.notified_bytes, now
        samples_per_s = (stream.stats.samples - s0) / (time.monotonic() - t0)
        rtts = await _night_rtts(hub, "pod-01", commands)
        need = eeg_bytes_per_s()
        note = (f"connection interval {radio.interval_s * 1000:.0f} ms, {radio.pkts_per_event} notifications/event, "
                f"ATT MTU {mtu}: capacity {capacity:.0f} B/s; 8 ch x 250 Hz EEG needs {need:.0f} B/s "
                f"({100 * need / capacity:.1f} %); all pod traffic at most {100 * max(used):.1f} %; "
                f"pod mem_free at least {mem_low} B (16 LEDs)")
        q = statistics.quantiles(rtts, n=100)
        return Row("ble", 1, samples_per_s, RATE_HZ, stream.stats.samples_lost, statistics.median(rtts), q[98],
                   100 * (1 - max(used)), note)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await bridge.close()
        await pod.stop()


TRANSPORTS = {"serial": serial_rates, "usb": usb_rates, "ble": ble_rates}


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--transports", default=",".join(TRANSPORTS), help="comma-separated: " + " ".join(TRANSPORTS))
    ap.add_argument("--pods", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--commands", type=int, default=60)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="transport-rates-") as tmp:
        for name in args.transports.split(","):
            rows.append(await TRANSPORTS[name](args.pods, args.seconds, args.commands, Path(tmp) / name))
    print_table(rows)


if __name__ == "__main__":
    asyncio.run(main())
