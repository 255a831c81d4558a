"""EEG soak: N emulated pods streaming at 250 Hz for a bounded time, samples lost counted on the wire.

Each pod runs the real firmware under micropython with its own virtual
headset (its own participant); a protocol-level client per pod
(hypnolum.emulator.eeg_client) reads the pod's pty, asks EEG_REPLAY for any
jump in the sample sequence and counts what never arrived. With
--unplug-every S each pod's port is pulled for --unplug-s seconds every S
seconds (staggered), so store and forward is part of the soak.

    .venv/bin/python bench/eeg_soak.py [--pods 4] [--seconds 600] [--unplug-every 0] [--channels 8]

Prints one line per pod and the total: samples expected, received (live /
replayed), lost, and the pod's own counters.
"""
from __future__ import annotations

import argparse
import asyncio
import tempfile
import time

from hypnolum.emulator.eeg_client import EegClient
from hypnolum.emulator.runner import Emulator


async def unplugger(pod, every: float, down: float, offset: float, stop: float) -> int:
    n = 0
    await asyncio.sleep(offset)
    while time.monotonic() + every < stop:
        await asyncio.sleep(every)
        pod.unplug()
        await asyncio.sleep(down)
        pod.replug()
        n += 1
    return n


async def main(args) -> int:
    with tempfile.TemporaryDirectory(prefix="hypnolum-soak-") as d:
        async with Emulator(args.pods, d, seed=args.seed, eeg_channels=args.channels) as emu:
            await emu.wait_links(30)
            clients = [EegClient(pod.tty_path) for pod in emu.pods]
            for c in clients:
                await c.start()
            for c in clients:
                await c.wait_for(lambda c=c: c.first is not None, 30)
            t0 = time.monotonic()
            stop = t0 + args.seconds
            plugs = []
            if args.unplug_every > 0:
                plugs = [asyncio.create_task(unplugger(pod, args.unplug_every, args.unplug_s,
                                                       i * args.unplug_every / len(emu.pods), stop))
                         for i, pod in enumerate(emu.pods)]
            while time.monotonic() < stop:
                await asyncio.sleep(min(10.0, stop - time.monotonic()))
                if args.progress:
                    lost = sum(c.lost() for c in clients)
                    print(f"  t={time.monotonic() - t0:5.0f} s lost so far {lost}", flush=True)
            unplugs = sum([await p for p in plugs]) if plugs else 0
            ends = [c.next_expected - 1 for c in clients]
            # let replays of the last gaps finish (they were asked for before the end)
            for c, end in zip(clients, ends):
                try:
                    await c.wait_for(lambda c=c, end=end: c.lost(end) == 0, 10)
                except TimeoutError:
                    pass
            elapsed = time.monotonic() - t0
            total_exp = total_lost = 0
            for c, pod, end in zip(clients, emu.pods, ends):
                expected = end - c.first + 1
                lost = c.lost(end)
                total_exp += expected
                total_lost += lost
                s = c.stats
                print(f"{pod.pod_id}: {expected} samples expected, {s.samples_live} live + {s.samples_replayed} "
                      f"replayed, {lost} lost; gaps seen {s.gaps_seen}, replays asked {s.replays_asked}, "
                      f"nacks {s.nacks}; pod boots {pod.counters.boots}, watchdog resets "
                      f"{pod.counters.watchdog_resets}, crashes {pod.counters.crashes}")
            for c in clients:
                await c.stop()
    rate = "125 Hz x 16 ch" if args.channels == 16 else "250 Hz x 8 ch"
    print(f"EEG soak: {args.pods} pods x {elapsed:.0f} s at {rate}, {unplugs} unplugs of {args.unplug_s} s: "
          f"{total_lost} samples lost of {total_exp} ({total_lost / max(total_exp, 1):.6%})")
    return 0 if total_lost == 0 else 1


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pods", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=600.0)
    ap.add_argument("--unplug-every", type=float, default=0.0, help="pull each pod's port every S seconds (0: never)")
    ap.add_argument("--unplug-s", type=float, default=1.0, help="how long the port stays unplugged (default 1 s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--channels", type=int, choices=(8, 16), default=8, help="16: Cyton + Daisy at 125 Hz")
    ap.add_argument("--progress", action="store_true", help="print the running count every 10 s")
    raise SystemExit(asyncio.run(main(ap.parse_args())))
