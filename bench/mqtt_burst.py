"""Command floods against a running hostd: a burst of QoS 1 set commands, then a sustained rate.

    .venv/bin/python bench/mqtt_burst.py [--burst 10000] [--rate 1000] [--seconds 30]

Starts its own mosquitto (loopback, with the queue limits of the shipped
host/deploy/mosquitto/hypnolum.conf), one emulated pod (the real firmware
under micropython) and ``hypnolum hostd`` as a process serving it.

1. Burst: publishes ``--burst`` set commands for the pod as fast as the broker
   takes them and waits for their results. Prints how many were answered
   ``ok``, ``nack``, ``busy`` or with another error, how many got no answer
   (must be 0), the time from the first publish to the last answer, and
   hostd's peak RSS.
2. Sustained: ``--rate`` commands a second for ``--seconds``. Prints the same
   counts, the EEG samples lost on the pod's MQTT stream and in its state
   (must be 0), and how hostd's RSS moved from the start of the flood to its end.

Exits non-zero if a command went unanswered or an EEG sample was lost.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from helpers.burst import KINDS, Burst, broker  # noqa: E402
from helpers.hostd import Hostd  # noqa: E402

from hypnolum.emulator.runner import Emulator  # noqa: E402

POD = "pod-01"


def rss_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in kB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def counts_line(counts, n: int) -> str:
    answered = ", ".join(f"{k} {counts[k]}" for k in KINDS)
    return f"{n} commands: {answered}, no answer {counts['none']}"


async def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {timeout} s")
        await asyncio.sleep(0.05)


async def burst(b: Burst, pid: int, n: int, timeout: float) -> bool:
    print(f"hostd RSS before the floods: {rss_kb(pid)['VmRSS'] / 1024:.1f} MB")
    t0 = time.monotonic()
    ids = await b.burst("burst", n)
    published = time.monotonic() - t0
    await b.answered(ids, timeout)
    elapsed = time.monotonic() - t0
    counts = b.count(ids)
    print(f"burst: {counts_line(counts, n)}")
    print(f"  published in {published:.2f} s, last answer after {elapsed:.2f} s; "
          f"hostd peak RSS {rss_kb(pid)['VmHWM'] / 1024:.1f} MB")
    return counts["none"] == 0


async def sustained(b: Burst, pid: int, rate: float, seconds: float, timeout: float) -> bool:
    rss0 = rss_kb(pid)["VmRSS"]
    eeg0 = len(b.eeg)
    state0 = dict((b.state or {}).get("eeg", {}))
    ids = await b.steady("steady", rate, seconds)
    await b.answered(ids, timeout)
    rss1 = rss_kb(pid)["VmRSS"]
    await wait_for(lambda: len(b.eeg) > eeg0 + 20, 10, "EEG after the flood")
    span, lost = b.eeg_lost()
    eeg = (b.state or {}).get("eeg", {})
    lost_state = eeg.get("samples_lost", 0) - state0.get("samples_lost", 0)
    counts = b.count(ids)
    print(f"sustained {rate:.0f}/s for {seconds:.0f} s: {counts_line(counts, len(ids))}")
    print(f"  EEG: {span} samples on MQTT, {lost} lost there; {lost_state} lost in the pod state "
          f"({eeg.get('samples_replayed', 0) - state0.get('samples_replayed', 0)} replayed)")
    print(f"  hostd RSS {rss0 / 1024:.1f} MB at the start, {rss1 / 1024:.1f} MB at the end "
          f"({(rss1 - rss0) / 1024:+.1f} MB); peak {rss_kb(pid)['VmHWM'] / 1024:.1f} MB")
    return counts["none"] == 0 and lost == 0 and lost_state == 0


async def main(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="hypnolum-burst-") as d:
        work = Path(d)
        mosquitto = broker(work / "mosquitto")
        try:
            async with Emulator(1, work / "emu") as emu:
                await emu.wait_links(30)
                hostd = Hostd(work, mosquitto.port, pods_dir=work / "emu", host_id="burst-host",
                              extra="[eeg]\npublish_interval_s = 0.1\n")
                hostd.start()
                try:
                    async with Burst(mosquitto.port, POD) as b:
                        await wait_for(lambda: (b.state or {}).get("link") == "online", 30, "pod online")
                        await wait_for(lambda: len(b.eeg) >= 5, 10, "EEG")
                        ok = await burst(b, hostd.proc.pid, args.burst, args.timeout)
                        if args.seconds > 0:
                            ok = await sustained(b, hostd.proc.pid, args.rate, args.seconds, args.timeout) and ok
                        if hostd.proc.poll() is not None:
                            print(f"hostd exited with status {hostd.proc.returncode}")
                            ok = False
                finally:
                    hostd.kill()
        finally:
            mosquitto.stop()
    return 0 if ok else 1


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--burst", type=int, default=10_000, help="commands in the burst (default 10 000)")
    ap.add_argument("--rate", type=float, default=1000.0, help="commands a second in the sustained flood")
    ap.add_argument("--seconds", type=float, default=30.0, help="length of the sustained flood (0: none)")
    ap.add_argument("--timeout", type=float, default=120.0, help="how long to wait for the last answers")
    raise SystemExit(asyncio.run(main(ap.parse_args())))
