"""Inter-pod frame skew of a circle: 8 emulated pods with injected clock error
(+-100 ppm, random start near the 2**30 wrap) and link jitter (0-8 ms), on one
hostd, on 3 hostd sharing one mosquitto, and on hostd split over two
mosquitto brokers joined by a bridge. Prints, per layout, the spread between
the first and the last pod showing the same frame (p50 / p99 / max, us), and
how far each pod's scheduled start landed from its instant.

    .venv/bin/python bench/circle_skew.py [--seconds 20] [--pods 8] [--layouts one,three,bridge] [--warmup 20]
"""
from __future__ import annotations

import argparse
import asyncio
import math
import os
import tempfile
from pathlib import Path

from hypnolum.broker import PrivateBroker
from hypnolum.emulator.circle_rig import (Rig, grid_errors, percentiles, realtime_to_monotonic_us, skew,
                                          slot_spread, split_errors, start_errors_us)
from hypnolum.host.commands import SceneSpec


def brokers(work: Path, layout: str) -> list[PrivateBroker]:
    a = PrivateBroker(work / "broker-a").start()
    if layout != "bridge":
        return [a]
    b = PrivateBroker(work / "broker-b", extra_conf=(
        f"connection to-a\naddress 127.0.0.1:{a.port}\ntopic hypnolum/# both 1\n"
        "cleansession true\nrestart_timeout 1\n")).start()
    return [a, b]


async def run(layout: str, n_pods: int, seconds: float, work: Path, jitter_ms: float, ppm: float, verbose: bool = False,
              pod_rt: int | None = None, warmup: float = 20.0) -> None:
    n_hosts = 1 if layout == "one" else (3 if layout == "three" else 2)
    bs = brokers(work, layout)
    # with a bridge, host 0 on broker a and host 1 on broker b
    rig = Rig(work, [b.port for b in bs], n_pods=n_pods, n_hosts=n_hosts, ppm_max=ppm,
              jitter_s=(0.0, jitter_ms / 1000) if jitter_ms > 0 else None, pod_rt_priority=pod_rt)
    try:
        await rig.start()
        await asyncio.sleep(1.0)
        clocks = await rig.wait_synced(60)
        await asyncio.sleep(warmup)  # pods online a while before a session: full clock windows
        await rig.define("bench")
        await asyncio.sleep(1.0)  # retained definition reaches every host (and across the bridge)
        scene = SceneSpec(effect="solid", brightness=1.0, color=(255, 180, 90))
        tl = await rig.schedule("bench", scene, lead_ms=1500)
        at_ns = tl.events[0].at_ns
        await asyncio.sleep(1.5 + seconds)
        pods = [p.pod for p in rig.pods]
        starts = start_errors_us(pods, at_ns)
        clocks = await rig.wait_synced(10)  # the estimates as they are now
        spreads = skew(pods, realtime_to_monotonic_us(at_ns) + 2e6, tl.period_us)
        p50, p99, mx = percentiles(spreads)
        # the same frames by when each emulated pod's process wrote them (this machine's scheduling)
        w50, w99, wmx = percentiles(skew(pods, realtime_to_monotonic_us(at_ns) + 2e6, tl.period_us, written=True))
        ok_starts = [s for s in starts if not math.isnan(s)]
        # what the clock estimates add and what the scheduling adds (see split_errors)
        epoch = realtime_to_monotonic_us(tl.epoch_ns)
        since = realtime_to_monotonic_us(at_ns) + 2e6
        slows, fasts = [], []
        for p in rig.pods:
            slow, fast = split_errors(grid_errors(p.pod, epoch, tl.period_us, since))
            slows.append(slow)
            fasts.append(fast)
            if verbose:
                c = clocks.get(p.pod.pod_id, {})
                f50, f99, _ = percentiles([abs(v) for v in fast.values()])
                ss = sorted(slow.values()) or [math.nan]
                print(f"  {p.pod.pod_id} host{p.host} ppm {p.ppm:+.1f} (est {c.get('drift_ppm')}) "
                      f"unc {c.get('uncertainty_us')} us: grid placement {ss[0]:.0f}..{ss[-1]:.0f} us, "
                      f"show error |p50| {f50:.0f} |p99| {f99:.0f} us")
        clock_spread = slot_spread(slows)
        show_abs = [abs(v) for f in fasts for v in f.values()]
        c50, c99, cmx = percentiles(clock_spread)
        s50, s99, smx = percentiles(show_abs)
        load = os.getloadavg()
        print(f"{layout:7s} pods={n_pods} hosts={n_hosts} brokers={len(bs)} frames={len(spreads)}: "
              f"skew p50 {p50:.0f} us, p99 {p99:.0f} us, max {mx:.0f} us; "
              f"start vs instant: {len(ok_starts)}/{n_pods} pods, "
              f"{min(ok_starts, default=math.nan):.0f}..{max(ok_starts, default=math.nan):.0f} us\n"
              f"        of which clock estimates (spread of the pods' grid placement): p50 {c50:.0f} us, "
              f"p99 {c99:.0f} us, max {cmx:.0f} us; show error per pod |p50| {s50:.0f} us, |p99| {s99:.0f} us, "
              f"max {smx:.0f} us; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}\n"
              f"        by the instants the emulated pods' processes wrote the frames: p50 {w50:.0f} us, "
              f"p99 {w99:.0f} us, max {wmx:.0f} us", flush=True)
    finally:
        await rig.stop()
        for b in bs:
            b.stop()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--pods", type=int, default=8)
    ap.add_argument("--layouts", default="one,three,bridge")
    ap.add_argument("--jitter-ms", type=float, default=8.0, help="link jitter, uniform 0..this, each way")
    ap.add_argument("--ppm", type=float, default=100.0, help="pod clock errors uniform in +-this")
    ap.add_argument("-v", "--verbose", action="store_true", help="per pod: error against the grid")
    ap.add_argument("--warmup", type=float, default=20.0,
                    help="seconds between the pods' clocks syncing and the circle starting (default 20: "
                         "a full clock window at 50 pings a second)")
    ap.add_argument("--pod-rt", type=int, default=None, metavar="PRIO",
                    help="run the emulated pods at SCHED_FIFO priority PRIO (root only)")
    args = ap.parse_args()
    for layout in args.layouts.split(","):
        with tempfile.TemporaryDirectory(prefix=f"circle-{layout}-") as tmp:
            await run(layout, args.pods, args.seconds, Path(tmp), args.jitter_ms, args.ppm, args.verbose, args.pod_rt,
                      args.warmup)


if __name__ == "__main__":
    asyncio.run(main())
