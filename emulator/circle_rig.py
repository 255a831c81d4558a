"""A room of emulated pods in one circle, on one or more hostd instances.

Used by the circle tests and by bench/circle_skew.py. Each hostd is a real
``hypnolum hostd`` process watching its own directory of pod ttys, on a real
mosquitto; each pod is the real firmware under MicroPython with its own clock
start (random, near the 2**30 wrap), clock error (HYPNOLUM_CLOCK_PPM) and
link jitter. Pods report their true render instants (LED2 datagrams), from
which :func:`skew` measures how far apart the pods show the same frame.
"""
from __future__ import annotations

import asyncio
import json
import random
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt

from hypnolum.host.circles import circle_topic
from hypnolum.procs import die_with_parent
from hypnolum.host.commands import SceneSpec
from hypnolum.host.timeline import Event, Timeline

from hypnolum.flash.bundle import Bundle

from . import flashed
from .pod import EmulatedPod
from .signals import Participant


@dataclass
class RigPod:
    pod: EmulatedPod
    host: int
    ppm: float


@dataclass
class Rig:
    workdir: Path
    broker_ports: list[int]  # hostd i uses broker_ports[i % len]
    n_pods: int = 8
    n_hosts: int = 1
    ppm_max: float = 100.0
    jitter_s: tuple[float, float] | None = (0.0, 0.008)
    ping_interval_s: float = 0.02  # circle pods: frequent exchanges, so enough are fast both ways
    seed: int = 1
    pod_nice: int | None = -10  # pods ahead of the host processes for the CPU (root only)
    pod_rt_priority: int | None = None  # or pods at real-time priority (root only)
    eeg_publish_interval_s: float | None = None  # hostd [eeg] publish_interval_s (None: its default)
    eeg_batch_ms: int | None = 12  # pod.json eeg_batch_ms: circle pods send EEG every 12 ms (3 samples)
    participant: Participant | None = None  # every wearer's signal model (None: one drawn per pod)
    led_count: int = 8
    eeg_channels: tuple[int, ...] = (8,)  # pod i has eeg_channels[i % len]: 8 at 250 Hz, 16 at 125 Hz
    app: Bundle | None = None  # boards flashed with this app (emulator/flashed.py): updatable; None: the source tree
    update_key: bytes = bytes(range(32))  # the flashed boards' update key
    ble: bool = False  # every pod's BLE on too (pod.json ble), its radio on ble_link, its pairing window open
    pods: list[RigPod] = field(default_factory=list)
    hostds: list[subprocess.Popen] = field(default_factory=list)
    ble_link: object | None = None  # with ble: the bumble LocalLink of every pod's radio

    def host_port(self, i: int) -> int:
        return self.broker_ports[i % len(self.broker_ports)]

    async def start(self) -> None:
        rng = random.Random(self.seed)
        for h in range(self.n_hosts):
            d = self.workdir / f"host{h}"
            (d / "pods").mkdir(parents=True, exist_ok=True)
            cfg = d / "hostd.toml"
            cfg.write_text(
                f'[host]\nid = "rig-host{h}"\n[mqtt]\nport = {self.host_port(h)}\nkeepalive = 5\nbackoff_max_s = 1.0\n'
                f'[serial]\nports = ["{d}/pods/*.tty"]\nscan_interval_s = 0.1\n'
                f"[pods]\nheartbeat_timeout_s = 1.5\nping_interval_s = {self.ping_interval_s}\n"
                "connect_interval_s = 0.1\ncommand_timeout_s = 0.3\ncommand_retries = 3\n"
                + (f"[eeg]\npublish_interval_s = {self.eeg_publish_interval_s}\n"
                   if self.eeg_publish_interval_s is not None else "")
            )
            with open(d / "hostd.log", "ab") as log:
                self.hostds.append(subprocess.Popen(
                    [sys.executable, "-m", "hypnolum", "hostd", "--config", str(cfg)],
                    stdout=subprocess.DEVNULL, stderr=log, preexec_fn=die_with_parent()))
        ble_link = None
        if self.ble:
            from bumble.link import LocalLink

            ble_link = self.ble_link = LocalLink()  # a central may join it (bench/pod_heap.py)
        for i in range(self.n_pods):
            h = i % self.n_hosts
            ppm = rng.uniform(-self.ppm_max, self.ppm_max)
            pod_id = f"pod{i}"
            pod_dir = self.workdir / f"host{h}" / "state" / pod_id
            flashed_kw = {}
            if self.ble:  # the pairing window opens at boot: a central may bond (pod/ble.py)
                pod_dir.mkdir(parents=True, exist_ok=True)
                (pod_dir / "ble_pair.flag").write_bytes(b"1")
            if self.app is not None:
                pod_dir.mkdir(parents=True, exist_ok=True)
                flashed.lay_out(pod_dir, self.app, self.update_key)
                flashed_kw["micropypath"] = flashed.micropypath(pod_dir)
            pod = EmulatedPod(pod_id, pod_dir, seed=self.seed, **flashed_kw,
                              led_count=self.led_count, eeg_channels=self.eeg_channels[i % len(self.eeg_channels)],
                              eeg_batch_ms=self.eeg_batch_ms,
                              participant=self.participant,
                              tty_link=self.workdir / f"host{h}" / "pods" / f"{pod_id}.tty", ble_link=ble_link,
                              env={"HYPNOLUM_CLOCK_PPM": f"{ppm:.3f}"})
            pod.link_jitter_s = self.jitter_s
            pod.nice = self.pod_nice
            pod.rt_priority = self.pod_rt_priority
            self.pods.append(RigPod(pod, h, ppm))
        await asyncio.gather(*(p.pod.start() for p in self.pods))

    async def stop(self) -> None:
        for proc in self.hostds:
            proc.terminate()
        for proc in self.hostds:
            try:
                await asyncio.to_thread(proc.wait, 10)
            except subprocess.TimeoutExpired:
                proc.kill()
        await asyncio.gather(*(p.pod.stop() for p in self.pods), return_exceptions=True)

    def client(self, broker: int = 0) -> aiomqtt.Client:
        return aiomqtt.Client("127.0.0.1", self.broker_ports[broker])

    async def wait_synced(self, timeout: float = 30.0) -> dict[str, dict]:
        """Until every pod's state says online with a synced clock; returns the clock states."""
        want = {p.pod.pod_id for p in self.pods}
        clocks: dict[str, dict] = {}
        async with self.client() as c:
            await c.subscribe("hypnolum/v1/pods/+/state", qos=1)
            async with asyncio.timeout(timeout):
                async for msg in c.messages:
                    s = json.loads(msg.payload)
                    if s.get("link") == "online" and (s.get("clock") or {}).get("synced"):
                        clocks[s["pod_id"]] = s["clock"]
                    if want <= set(clocks):
                        return clocks
        return clocks

    async def define(self, circle: str, **definition) -> None:
        async with self.client() as c:
            body = {"pods": [p.pod.pod_id for p in self.pods], **definition}
            await c.publish(circle_topic(circle, "definition"), json.dumps(body), qos=1, retain=True)

    async def schedule(self, circle: str, scene: SceneSpec, lead_ms: int, period_us: int = 16667,
                       timeline: Timeline | None = None) -> Timeline:
        """Publish (retained) a timeline whose one event starts lead_ms from now; returns it."""
        now = time.time_ns()
        if timeline is None:
            at = now + lead_ms * 10**6
            timeline = Timeline(epoch_ns=at, period_us=period_us, events=[Event(at_ns=at, scene=scene)])
        else:
            at = timeline.snap(now + lead_ms * 10**6)
            timeline = Timeline(epoch_ns=timeline.epoch_ns, period_us=timeline.period_us,
                                events=[*timeline.events, Event(at_ns=at, scene=scene)])
        async with self.client() as c:
            await c.publish(circle_topic(circle, "timeline"), timeline.model_dump_json(), qos=1, retain=True)
        return timeline


def realtime_to_monotonic_us(t_ns: int) -> float:
    """A CLOCK_REALTIME instant on CLOCK_MONOTONIC (us), on this machine."""
    return (t_ns - (time.time_ns() - time.monotonic_ns())) / 1000


def lit(frame) -> bool:
    return any(frame.rgb)


def start_errors_us(pods: list[EmulatedPod], at_ns: int) -> list[float]:
    """Per pod: when its first lit frame was shown, minus the scheduled instant (us)."""
    at_mono = realtime_to_monotonic_us(at_ns)
    out = []
    for p in pods:
        first = next((f for f in p.leds.history if f.shown_us is not None and lit(f) and f.shown_us >= at_mono - 50000), None)
        out.append(float("nan") if first is None else first.shown_us - at_mono)
    return out


def skew(pods: list[EmulatedPod], since_mono_us: float, period_us: float, written: bool = False) -> list[float]:
    """For each frame shown by every pod after ``since_mono_us``: the spread (us)
    between the earliest and the latest pod showing it. Frames are matched by
    their slot on the grid, taken from the first pod's frames. ``written``: by
    the instants the pods' processes wrote the frames instead of when they lit."""
    series = [[(f.written_us if written else f.shown_us) for f in p.leds.history
               if f.shown_us is not None and f.shown_us >= since_mono_us and (f.written_us or not written)]
              for p in pods]
    if not all(series):
        return []
    ref = series[0][0]
    slots: list[dict[int, float]] = []
    for s in series:
        d: dict[int, float] = {}
        for t in s:
            d.setdefault(round((t - ref) / period_us), t)
        slots.append(d)
    return slot_spread(slots)


def slot_spread(slots: list[dict[int, float]]) -> list[float]:
    """For each frame slot every pod has: the spread between the pods' values (us)."""
    if not slots:
        return []
    common = set(slots[0]).intersection(*slots[1:])
    return [max(d[k] for d in slots) - min(d[k] for d in slots) for k in sorted(common)]


def percentiles(xs: list[float]) -> tuple[float, float, float]:
    xs = sorted(xs)
    if not xs:
        return (float("nan"),) * 3
    q = statistics.quantiles(xs, n=100, method="inclusive") if len(xs) > 1 else [xs[0]] * 99
    return xs[len(xs) // 2], q[98], xs[-1]


def grid_errors(pod: EmulatedPod, epoch_mono_us: float, period_us: float, since_mono_us: float) -> dict[int, float]:
    """Frame slot k -> when the pod showed it minus grid instant k (us), on this machine's clock."""
    out: dict[int, float] = {}
    for f in pod.leds.history:
        if f.shown_us is None or f.shown_us < since_mono_us:
            continue
        k = round((f.shown_us - epoch_mono_us) / period_us)
        out.setdefault(k, f.shown_us - (epoch_mono_us + k * period_us))
    return out


def split_errors(errs: dict[int, float], half_window: int = 15) -> tuple[dict[int, float], dict[int, float]]:
    """Split a pod's grid errors into a slow part (rolling median over +-half_window
    frames: where the pod's clock estimate puts the grid) and a fast part (the rest:
    how far each frame's show landed from the pod's own schedule, i.e. the pod's and
    the machine's scheduling). The clock estimate moves only at FRAME_PHASE updates
    (every 0.5 s) and with the drift, far slower than frame-to-frame show jitter."""
    ks = sorted(errs)
    slow: dict[int, float] = {}
    fast: dict[int, float] = {}
    for i, k in enumerate(ks):
        win = sorted(errs[j] for j in ks[max(0, i - half_window):i + half_window + 1])
        slow[k] = win[len(win) // 2]
        fast[k] = errs[k] - slow[k]
    return slow, fast
