"""hostd CPU per streaming pod, with recording (BDF+) and MQTT on.

Starts a private mosquitto, hostd (a subprocess, recorder enabled) and a light
protocol-level pod simulator in another process: N pods on N ptys, each
streaming 8 channels at 250 Hz in 40 ms batches (10 samples), band powers at
4 Hz and a status once a second, answering CONNECT and PING. Once every pod is
online and streaming, hostd's own CPU time (user + system, from /proc through
psutil) is measured over a window; the figure is pods per core.

    .venv/bin/python bench/hostd_cpu.py [--pods 50] [--window 20]

Target: >= 200 pods per core. The simulator and the broker run in their own
processes and are not counted (their CPU is printed for context).
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import re
import signal
import struct
import subprocess
import sys
import tempfile
import time
import tty
import zlib
from pathlib import Path

import aiomqtt
import psutil
from cobs import cobs

from hypnolum.broker import PrivateBroker
from hypnolum.procs import die_with_parent
from hypnolum.protocol import codec

CHANNELS, RATE, BATCH = 8, 250, 10  # 10 samples = 40 ms
BATCH_S = BATCH / RATE


# -- the simulator (child process) ---------------------------------------------------
class SimPod:
    """Just enough of a pod: hello on connect, pong on ping, EEG, bands, status. Frames
    are built with struct + zlib + cobs so the simulator stays light."""

    def __init__(self, link: Path, pod_id: str, boot_id: int):
        self.link, self.pod_id, self.boot_id = link, pod_id, boot_id
        self.seq = 0
        self.sample = 0
        self.online = False
        self.decoder = codec.FrameDecoder()
        self.master, slave = os.openpty()
        tty.setraw(slave)
        self.slave = slave
        os.set_blocking(self.master, False)
        link.unlink(missing_ok=True)
        link.symlink_to(os.ttyname(slave))
        self.rows = os.urandom(3 * CHANNELS * BATCH)
        self.bands = struct.pack("<B", CHANNELS * 5) + struct.pack(f"<{CHANNELS * 5}f", *range(CHANNELS * 5))
        self.written = 0

    def frame(self, type_id: int, payload: bytes) -> bytes:
        body = struct.pack("<BBH", codec.PROTOCOL_VERSION, type_id, self.seq) + payload
        self.seq = (self.seq + 1) & 0xFFFF
        return cobs.encode(body + struct.pack("<I", zlib.crc32(body))) + b"\x00"

    def write(self, data: bytes) -> None:
        try:
            self.written += os.write(self.master, data)
        except BlockingIOError:
            pass

    def on_readable(self) -> None:
        try:
            data = os.read(self.master, 4096)
        except OSError:
            return
        for f in self.decoder.feed(data):
            if f.name == "connect":
                self.write(codec.encode("hello", self.seq, {
                    "pod_id": self.pod_id, "fw_version": "sim", "protocol_version": codec.PROTOCOL_VERSION,
                    "fingerprint": codec.FINGERPRINT, "build_hash": 0, "boot_id": self.boot_id, "led_count": 16,
                    "eeg_channels": CHANNELS, "sample_rate_hz": RATE}))
                self.seq += 1
                self.online = True
            elif f.name in codec.messages.COMMANDS:  # e.g. the fade to off when hostd stops
                self.write(self.frame(0x30, struct.pack("<H", f.seq)))
            elif f.name == "ping":
                self.write(self.frame(0x05, struct.pack("<IQII", f.fields["nonce"], f.fields["host_time_us"], 1, 2)))

    def tick_eeg(self) -> None:
        payload = struct.pack("<IIBB", self.sample, self.sample * 4, CHANNELS, 0) + self.rows
        self.sample += BATCH
        if self.online:
            self.write(self.frame(0x10, payload))

    def tick_bands(self) -> None:
        if self.online:
            self.write(self.frame(0x11, struct.pack("<IIBHHH", self.sample - 1, self.sample * 4, CHANNELS, 1000, 0, 0)
                                  + self.bands))

    def tick_status(self, uptime_ms: int) -> None:
        if self.online:
            self.write(self.frame(0x03, struct.pack("<11IBB", uptime_ms, uptime_ms, 0, 0, 0, self.sample, 0, 0, 0, 0,
                                                    50000, 1, 100)))


async def simulate(n: int, pods_dir: Path) -> None:
    loop = asyncio.get_running_loop()
    pods = [SimPod(pods_dir / f"sim{i:04d}.tty", f"sim-{i:04d}", 0x1000 + i) for i in range(n)]
    for p in pods:
        loop.add_reader(p.master, p.on_readable)
    start = time.monotonic()
    tick = 0
    while True:  # one clock for all pods, each pod's batches spread over the 40 ms
        tick += 1
        for p in pods:
            p.tick_eeg()
        if tick % 6 == 0:  # 240 ms: >= 4 Hz
            for p in pods:
                p.tick_bands()
        if tick % 25 == 0:
            for p in pods:
                p.tick_status(int((time.monotonic() - start) * 1000))
            print(json.dumps({"samples": sum(p.sample for p in pods), "online": sum(p.online for p in pods)}), flush=True)
        await asyncio.sleep(max(0.0, start + tick * BATCH_S - time.monotonic()))


# -- the bench ------------------------------------------------------------------------
async def wait_streaming(port: int, n: int, timeout: float) -> dict[str, dict]:
    states: dict[str, dict] = {}
    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.subscribe("hypnolum/v1/pods/+/state")
        deadline = time.monotonic() + timeout

        async def collect():
            async for m in client.messages:
                s = json.loads(m.payload)
                states[s["pod_id"]] = s

        task = asyncio.create_task(collect())
        try:
            while time.monotonic() < deadline:
                streaming = [s for s in states.values() if s["link"] == "online" and (s.get("eeg") or {}).get("samples", 0) > 0]
                if len(streaming) >= n:
                    return states
                await asyncio.sleep(0.5)
        finally:
            task.cancel()
    raise SystemExit(f"only {len(states)} of {n} pods came online within {timeout} s")


TELEMETRY: dict[str, float] = {}


async def final_states(port: int, n: int) -> dict[str, dict]:
    """The pods' retained states, and (in TELEMETRY) the bands and EEG rates seen on MQTT."""
    states: dict[str, dict] = {}
    counts = {"bands": 0, "eeg": 0}
    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.subscribe("hypnolum/v1/pods/+/state")
        await client.subscribe("hypnolum/v1/pods/+/bands")
        await client.subscribe("hypnolum/v1/pods/+/eeg")
        t0 = time.monotonic()

        async def collect():
            async for m in client.messages:
                leaf = m.topic.value.rsplit("/", 1)[1]
                if leaf == "state":
                    s = json.loads(m.payload)
                    states[s["pod_id"]] = s
                elif leaf == "bands":
                    counts["bands"] += 1
                else:
                    counts["eeg"] += json.loads(m.payload)["n"]
        task = asyncio.create_task(collect())
        await asyncio.sleep(3.0)
        task.cancel()
        dt = time.monotonic() - t0
    TELEMETRY.update(bands_hz=counts["bands"] / dt / n, eeg_sps=counts["eeg"] / dt / n)
    return states


def bench(n: int, window: float, profile: Path | None = None) -> None:
    with tempfile.TemporaryDirectory(prefix="hostd-cpu-") as tmp:
        tmp = Path(tmp)
        pods_dir, rec = tmp / "pods", tmp / "rec"
        pods_dir.mkdir()
        broker = PrivateBroker(tmp / "mosquitto").start()
        config = tmp / "hostd.toml"
        config.write_text(f'[host]\nid = "bench"\n[mqtt]\nport = {broker.port}\n'
                          f'[serial]\nports = ["{pods_dir}/*.tty"]\nscan_interval_s = 0.5\n'
                          f'[recorder]\nenabled = true\ndir = "{rec}"\nparticipant = "BENCH"\n')
        sim = subprocess.Popen([sys.executable, __file__, "--simulate", str(n), "--dir", str(pods_dir)],
                               stdout=subprocess.PIPE, text=True, preexec_fn=die_with_parent())
        time.sleep(0.5)
        hostd = subprocess.Popen([sys.executable, "-m", "hypnolum", "hostd", "--config", str(config),
                                  "--log-level", "WARNING"], stdout=subprocess.DEVNULL, stderr=open(tmp / "hostd.log", "wb"),
                                 preexec_fn=die_with_parent())
        try:
            try:
                asyncio.run(wait_streaming(broker.port, n, 30 + n * 0.2))
            except SystemExit:
                print("\n".join(l for l in (tmp / "hostd.log").read_text().splitlines() if "pending publish" not in l)[-3000:], file=sys.stderr)
                raise
            time.sleep(2.0)  # settle: first records, replays of the hand-over
            first = asyncio.run(final_states(broker.port, n))
            procs = {"hostd": psutil.Process(hostd.pid), "simulator": psutil.Process(sim.pid),
                     "mosquitto": psutil.Process(broker.proc.pid)}
            before = {k: p.cpu_times() for k, p in procs.items()}
            t0 = time.monotonic()
            if profile:  # sample hostd's stacks during the window (py-spy; the figure is then pessimistic)
                subprocess.run(["py-spy", "record", "--nonblocking", "--format", "raw", "-r", "400", "-o", str(profile), "-d", str(int(window)),
                                "-p", str(hostd.pid)], check=False, capture_output=True)
            else:
                time.sleep(window)
            dt = time.monotonic() - t0
            used = {k: (p.cpu_times().user + p.cpu_times().system - before[k].user - before[k].system) / dt
                    for k, p in procs.items()}
            states = asyncio.run(final_states(broker.port, n))
        finally:
            hostd.terminate()
            try:
                hostd.wait(10)
            except subprocess.TimeoutExpired:
                hostd.kill()
                hostd.wait()
            sim.kill()
            sim.wait()
            broker.stop()
        lost = sum((s.get("eeg") or {}).get("samples_lost", 0) for s in states.values())
        dropped = sum(s["counters"]["host"]["events_dropped"] for s in states.values())
        samples = sum((s.get("eeg") or {}).get("samples", 0) for s in states.values())
        # what hostd handed on in order between the two snapshots (~window + 3 s apart)
        rate = (samples - sum((s.get("eeg") or {}).get("samples", 0) for s in first.values())) / (dt + 3.0) / n
        files = list(rec.glob("*.bdf")) if rec.exists() else []
        log = (tmp / "hostd.log").read_text()
        frac = used["hostd"]
        print(f"pods: {n} streaming 8 ch @ 250 Hz (40 ms batches) + bands 4 Hz, recording + MQTT on")
        print(f"hostd CPU: {frac * 100:.1f} % of one core over {dt:.1f} s = {frac / n * 1000:.2f} ms CPU per pod-second")
        print(f"(simulator {used['simulator'] * 100:.0f} %, mosquitto {used['mosquitto'] * 100:.0f} % of a core)")
        print(f"on MQTT per pod: bands {TELEMETRY['bands_hz']:.1f} Hz, EEG {TELEMETRY['eeg_sps']:.0f} samples/s")
        bad = sum(sum(s["counters"]["host"]["frames_bad"].values()) for s in states.values())
        jumps = sum(s["counters"]["host"]["eeg_seq_gaps"] for s in states.values())
        replays = sum((s.get("eeg") or {}).get("replays_requested", 0) for s in states.values())
        held = sum((s.get("eeg") or {}).get("held", 0) for s in states.values())
        print(f"in-order samples per pod per second during the window: {rate:.0f} (the pods send {RATE})")
        print(f"bad frames {bad}, sequence jumps {jumps}, replays requested {replays} (the simulator has no ring), "
              f"held now {held}")
        print(f"samples recorded {samples}, lost {lost}, events dropped {dropped}, recordings {len(files)}, "
              f"log warnings {log.count('WARNING')}")
        kinds = collections.Counter(re.sub(r"\d+", "N", line.split("WARNING", 1)[1])[:90]
                                    for line in log.splitlines() if "WARNING" in line)
        for kind, count in kinds.most_common(5):
            print(f"  warning x{count}: {kind.strip()}")
        print(f"pods per core: {n / frac:.0f}  (target >= 200)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pods", type=int, default=50)
    ap.add_argument("--window", type=float, default=20.0)
    ap.add_argument("--profile", type=Path, help="write py-spy's raw (collapsed) stacks of hostd to this file")
    ap.add_argument("--simulate", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-up of children on SIGTERM too
    if args.simulate:
        asyncio.run(simulate(args.simulate, args.dir))
    else:
        bench(args.pods, args.window, args.profile)


if __name__ == "__main__":
    main()
