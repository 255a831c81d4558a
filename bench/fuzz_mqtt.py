"""Fuzz a running hostd over MQTT with hypothesis-drawn hostile input.

    .venv/bin/python bench/fuzz_mqtt.py [--count N] [--seed S] [--batch B] [--max-crashes K]
                                        [--skip-kind KIND] [--dir DIR]

Starts its own mosquitto on a free loopback port, one emulated pod (the real
firmware under micropython) and ``hypnolum hostd`` as a process, then
publishes N payloads (default 100 000) on every topic hostd subscribes to:
``pods/<id>/set``, ``/marker``, ``/participant``, ``circles/<c>/definition``
and ``/timeline`` (retained or not), and the EEG topics of circle pods
(tests/helpers/fuzz_payloads.py). After each batch hostd must answer a
barrier, every 20 batches and at the end a good command to the pod must be
answered ``ok`` (tests/helpers/fuzz_hostd.py).

Prints the payloads sent, per topic and per kind, hostd's exits and crashes
(each with its exit status, the payload that did it, hostd's own line about it
and its last log lines; the payload is saved under DIR), the good command
after, and the rate. Exits non-zero on any crash or if the good command is not
answered. Everything it started is stopped; retained messages it left are cleared.
"""
from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from helpers.fuzz_hostd import FuzzRig, Report, fuzz, summary  # noqa: E402
from helpers.fuzz_payloads import KINDS  # noqa: E402


async def main_async(args: argparse.Namespace) -> int:
    workdir = args.dir or Path(tempfile.mkdtemp(prefix="hypnolum-fuzz-mqtt-"))
    last = [0]

    def progress(r: Report) -> None:
        if r.sent - last[0] >= 10_000:
            last[0] = r.sent
            print(f"  ... {r.sent} sent, {len(r.crashes)} crashes, {r.rate:.0f}/s", file=sys.stderr, flush=True)

    main = asyncio.current_task()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)  # stop everything it started
    async with FuzzRig(workdir) as rig:
        report = await fuzz(rig, args.count, args.seed, args.batch, args.max_crashes, progress,
                            frozenset(args.skip_kind))
    print(summary(report))
    print(f"  work directory (hostd logs, crash payloads): {workdir}")
    return 1 if report.crashes or report.good_ms is None else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=100_000, help="payloads to send (default 100 000)")
    p.add_argument("--seed", type=int, default=1, help="hypothesis seed (default 1)")
    p.add_argument("--batch", type=int, default=50, help="payloads between barriers (default 50)")
    p.add_argument("--max-crashes", type=int, default=5, help="stop after this many crashes (default 5)")
    p.add_argument("--skip-kind", action="append", default=[], choices=KINDS,
                   help="leave out payloads of this kind (repeat), to look past a known crash")
    p.add_argument("--dir", type=Path, default=None, help="work directory (default: a new temporary one)")
    try:
        return asyncio.run(main_async(p.parse_args()))
    except (asyncio.CancelledError, KeyboardInterrupt):
        print("mqtt fuzz: stopped before the end", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
