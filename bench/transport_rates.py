"""Transport rates in the emulator: per transport, what the real firmware sustains through hostd.

For each transport (one function per transport; a table printer common to all) an emulated pod
at 8 ch x 250 Hz runs the real firmware; hostd (Hub, PodSession, the transport) takes its link
and a real mosquitto its MQTT. Printed per transport:

* EEG samples per second sustained: samples hostd's stream handed on, over the run;
* command round trip p50 / p99: hostd's session.command (night_mode, answered ACK), sent
  one after another;
* the lowest link margin: 100 % minus the largest share of the link's capacity the pod's
  traffic used in any one-second window.

BLE: the pod's radio is emulator/ble_radio.py with its link timing (connection interval,
notifications per connection event, the negotiated ATT MTU), so capacity = packets per
event x (MTU - 3) / interval; the pod's traffic is every notification byte (EEG, band powers,
status, LED previews). The central bonds first (the pod's pairing window is open at boot).

    .venv/bin/python bench/transport_rates.py [--seconds 20] [--commands 200]
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from hypnolum.broker import PrivateBroker
from hypnolum.host.config import parse
from hypnolum.host.hub import Hub
from hypnolum.host.mqtt import MqttBridge
from hypnolum.protocol import codec

RATE_HZ = 250
CHANNELS = 8


@dataclass
class Rates:
    transport: str
    samples_per_s: float
    rtt_p50_ms: float
    rtt_p99_ms: float
    margin_pct: float
    note: str = ""


def print_table(rows: list[Rates]) -> None:
    print(f"{'transport':<10} | {'EEG samples/s sustained':>23} | {'command RTT p50/p99 ms':>22} | "
          f"{'lowest link margin % of capacity':>32}")
    for r in rows:
        print(f"{r.transport:<10} | {r.samples_per_s:>23.1f} | {r.rtt_p50_ms:>10.1f} / {r.rtt_p99_ms:<9.1f} | "
              f"{r.margin_pct:>32.1f}")
        if r.note:
            print(f"{'':<10}   {r.note}")


def eeg_bytes_per_s(channels: int = CHANNELS, rate_hz: int = RATE_HZ, batch_ms: int = 40) -> float:
    """Wire bytes a second of EEG takes: eeg_batch frames (COBS, delimiter, header, CRC) of
    batch_ms of samples each, sample values random (COBS adds its worst near that)."""
    import os

    n = rate_hz * batch_ms // 1000
    frame = codec.encode("eeg_batch", 1, {"first_seq": 1, "ticks_ms": 1, "channels": channels, "flags": 0,
                                           "samples": os.urandom(3 * channels * n)})
    return len(frame) * rate_hz / n


def _hub_config(port: int):
    return parse({
        "host": {"id": "bench"},
        "mqtt": {"port": port, "keepalive": 5, "discovery": False},
        "ble": {"reconnect_min_s": 0.2, "reconnect_max_s": 0.5, "connect_timeout_s": 5},
        "pods": {"heartbeat_timeout_s": 3, "ping_interval_s": 0.5, "connect_interval_s": 0.1,
                 "command_timeout_s": 1, "command_retries": 3},
    })


async def _rtts(hub: Hub, pod_id: str, n: int) -> list[float]:
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


async def ble_rates(work: Path, port: int, seconds: float, commands: int) -> Rates:
    """The BLE transport: hostd's BleTransport over a bumble central, the pod's own GATT code."""
    import sys

    from bumble.link import LocalLink

    from hypnolum.emulator.ble_radio import PodRadio
    from hypnolum.emulator.pod import EmulatedPod, PodConfig
    from hypnolum.host.transport.ble import ATT_HEADER, supervise

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
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
    cfg = _hub_config(port)
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
        rtts = await _rtts(hub, "pod-01", commands)
        need = eeg_bytes_per_s()
        note = (f"connection interval {radio.interval_s * 1000:.0f} ms, {radio.pkts_per_event} notifications/event, "
                f"ATT MTU {mtu}: capacity {capacity:.0f} B/s; 8 ch x 250 Hz EEG needs {need:.0f} B/s "
                f"({100 * need / capacity:.1f} %); all pod traffic at most {100 * max(used):.1f} %; "
                f"pod mem_free at least {mem_low} B (16 LEDs)")
        q = statistics.quantiles(rtts, n=100)
        return Rates("ble", samples_per_s, statistics.median(rtts), q[98], 100 * (1 - max(used)), note)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await bridge.close()
        await pod.stop()


TRANSPORTS = {"ble": ble_rates}


async def run(args) -> int:
    rows = []
    with tempfile.TemporaryDirectory(prefix="hypnolum-rates-") as tmp:
        work = Path(tmp)
        broker = PrivateBroker(work / "broker").start()
        try:
            for name in args.transport or list(TRANSPORTS):
                rows.append(await TRANSPORTS[name](work / name, broker.port, args.seconds, args.commands))
        finally:
            broker.stop()
    print_table(rows)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--commands", type=int, default=200)
    p.add_argument("--transport", action="append", choices=sorted(TRANSPORTS))
    return asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
