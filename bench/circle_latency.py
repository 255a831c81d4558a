"""EEG-sample-to-light latency, measured on emulated pods (real firmware, real
hostd, real mosquitto).

Two loops:

* ``local``: the pod's own EEG steers its light (``alpha_bloom``): sample at the
  headset -> pod band powers -> frame showing them. Target p99 <= 25 ms.
* ``group``: every pod's raw EEG goes through hostd and MQTT to the circle's
  group EEG, whose value comes back to every pod (``circle`` effect, drive
  "alpha"). Target p99 <= 60 ms.

Method: every pod's emulated headset adds a strong 10 Hz wave to all channels
for 1 s, then stops for 3 s (so the alpha window and the light settle), repeatedly. The
step's "arrival" is the instant the headset sent the first burst holding a
boosted sample to the pod; its "light" is the first frame (the instant it lit,
on this machine's clock) that rose above everything the pod showed in the
0.3 s before the step, by 2 % of the way to the top the step reaches: the
dead time of the step response. How fast the light then climbs is the
safety governor's (docs/light.md: a flash-sized change takes >= ~235 ms), not
the data path's. The wearers are awake with eyes open (little alpha, no
blinks, spindles or K-complexes), so the light is steady before the step and
its first rise is the step's: the step is the onset of alpha as eyes close.
Effects run with smoothing 1 (no low-pass of their own).
Latency = light - arrival, one figure per pod and step.

    .venv/bin/python bench/circle_latency.py [--loops local,group] [--pods 4] [--steps 10]
        [--publish-interval-s 0] [--rate-hz 10]
"""
from __future__ import annotations

import argparse
import asyncio
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from hypnolum.broker import PrivateBroker
from hypnolum.emulator import cyton_protocol, headset
from hypnolum.emulator.circle_rig import Rig, percentiles
from hypnolum.emulator.signals import Participant
from hypnolum.host.commands import SceneSpec

EYES_OPEN = Participant(alpha_uv=2.0, blinks_per_min=0.0, spindles_per_min=0.0, kcomplexes_per_min=0.0,
                        script=(("wake", 3600.0),))
_ON_S = 1.0
_OFF_S = 3.0
_BOOST_UV = 200.0

# -- the step injected at the headsets --------------------------------------------
_boost = False
_pending: set[int] = set()  # id(cyton) that generated boosted samples not yet sent
_arrivals: dict[int, list[float]] = {}  # id(cyton) -> monotonic instants the steps were sent

_physical_uv = cyton_protocol.Cyton.physical_uv
_send = headset.VirtualHeadset._send


def _boosted_uv(self, n):
    uv = _physical_uv(self, n)
    if _boost:
        t = (self._sent + np.arange(n)) / self.sample_rate_hz
        uv = uv + (_BOOST_UV * np.sin(2 * np.pi * 10.0 * t))[:, None]
        if id(self) not in _arrivals or len(_arrivals[id(self)]) < _step_no:
            _pending.add(id(self))
    return uv


def _send_stamped(self, data):
    n = _send(self, data)
    key = id(self.cyton)
    if key in _pending:
        _pending.discard(key)
        _arrivals.setdefault(key, []).append(time.monotonic() * 1e6)
    return n


cyton_protocol.Cyton.physical_uv = _boosted_uv
headset.VirtualHeadset._send = _send_stamped
_step_no = 0


def level(frame) -> int:
    return sum(frame.rgb)


def latencies(rig: Rig, steps: int) -> list[float]:
    out = []
    for p in rig.pods:
        arr = _arrivals.get(id(p.pod.headset.cyton), [])[:steps]
        frames = [(f.shown_us, level(f)) for f in p.pod.leds.history if f.shown_us is not None]
        for a in arr:
            before = [lv for t, lv in frames if a - 3e5 <= t < a]
            after = [lv for t, lv in frames if a <= t < a + _ON_S * 1e6]
            if not before or not after:
                continue
            base, top = max(before), max(after)
            if top <= base:
                out.append(math.nan)  # the step never showed
                continue
            cut = base + (top - base) / 50
            i = next(i for i, (t, lv) in enumerate(frames) if t >= a and lv > cut)
            out.append(frames[i][0] - a)
    return out


async def run(loop_name: str, n_pods: int, steps: int, work: Path, publish_s: float, rate_hz: float,
              verbose: bool = False) -> None:
    global _boost, _step_no
    broker = PrivateBroker(work / "broker").start()
    rig = Rig(work, [broker.port], n_pods=n_pods, n_hosts=1, jitter_s=None, eeg_publish_interval_s=publish_s,
              participant=EYES_OPEN)
    _arrivals.clear()
    try:
        await rig.start()
        await rig.wait_synced(60)
        await rig.define("lat", drive="alpha", rate_hz=rate_hz)
        await asyncio.sleep(0.5)
        effect = "alpha_bloom" if loop_name == "local" else "circle"
        await rig.schedule("lat", SceneSpec(effect=effect, brightness=1.0, params=[1]), lead_ms=500)
        await asyncio.sleep(3.0)  # a full alpha window of the natural signal first
        for k in range(steps):
            _step_no = k + 1
            _boost = True
            await asyncio.sleep(_ON_S)
            _boost = False
            await asyncio.sleep(_OFF_S)
        lat = latencies(rig, steps)
        ok = [x / 1000 for x in lat if not math.isnan(x)]
        if verbose:
            print("  latencies (ms, per pod and step):", " ".join(f"{x / 1000:.1f}" for x in lat))
        p50, p99, mx = percentiles(ok)
        load = os.getloadavg()
        target = 25 if loop_name == "local" else 60
        print(f"{loop_name:5s} pods={n_pods} steps={steps} publish_interval_s={publish_s} rate_hz={rate_hz}: "
              f"sample-to-light p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {mx:.1f} ms (target p99 <= {target} ms); "
              f"{len(ok)}/{len(lat)} steps seen; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    finally:
        await rig.stop()
        broker.stop()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--loops", default="local,group")
    ap.add_argument("--pods", type=int, default=4)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--publish-interval-s", type=float, default=0.0,
                    help="hostd [eeg] publish_interval_s (0: each batch at once, as circle hosts run)")
    ap.add_argument("--rate-hz", type=float, default=10.0, help="the circle's group value rate")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every latency")
    args = ap.parse_args()
    for name in args.loops.split(","):
        with tempfile.TemporaryDirectory(prefix=f"circle-lat-{name}-") as tmp:
            await run(name, args.pods, args.steps, Path(tmp), args.publish_interval_s, args.rate_hz, args.verbose)


if __name__ == "__main__":
    asyncio.run(main())
