"""Link latency for an emulated pod, in a process of its own.

    python -m hypnolum.emulator.link_relay LISTEN CONNECT --jitter-ms LO HI [--seed S]

The firmware connects to the stream socket LISTEN instead of the emulator's
link.sock; for each such connection the relay connects to CONNECT (the
emulator's link.sock) and carries the bytes both ways as a USB-UART bridge
does: bytes wait in the bridge until the far side's next read, which comes a
uniform random LO..HI ms after the first byte of a read arrived, and
everything that arrives meanwhile leaves with it (in order, never reordered;
the delay does not grow with the traffic, as the reader takes all there is).

Why a process: in the emulator's event loop, beside the headsets and LED
sockets of every pod, a timer of a millisecond fires several milliseconds
late, so the injected jitter would be mostly the machine's. Here timers are
kept with select() (microsecond timeouts) and, where allowed, at real-time
priority (EmulatedPod asks for it). When either side closes, so does the
other, and the relay waits for the firmware's next connection.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import random
import select
import socket
import sys
import time


class _Way:
    """One direction: bytes held until the far side's next read, then written."""

    def __init__(self, dst: socket.socket, lo: float, hi: float, rng: random.Random):
        self.dst = dst
        self.lo, self.hi, self.rng = lo, hi, rng
        self.held: list[bytes] = []
        self.due: float | None = None  # when the held bytes leave
        self.out = b""  # released, not yet accepted by dst

    def take(self, data: bytes, now: float) -> None:
        if self.due is None:
            self.due = now + self.rng.uniform(self.lo, self.hi)
        self.held.append(data)

    def release(self, now: float) -> None:
        if self.due is not None and now >= self.due:
            self.out += b"".join(self.held)
            self.held.clear()
            self.due = None
        self.flush()

    def flush(self) -> None:
        if self.out:
            try:
                n = self.dst.send(self.out)
            except (BlockingIOError, InterruptedError):
                return
            self.out = self.out[n:]


def relay(pod: socket.socket, emu: socket.socket, lo: float, hi: float, rng: random.Random) -> None:
    """Until either side closes."""
    for s in (pod, emu):
        s.setblocking(False)
    to_emu, to_pod = _Way(emu, lo, hi, rng), _Way(pod, lo, hi, rng)
    ways = {pod: to_emu, emu: to_pod}
    while True:
        now = time.monotonic()
        dues = [w.due for w in ways.values() if w.due is not None]
        timeout = max(0.0, min(dues) - now) if dues else None
        writers = [w.dst for w in ways.values() if w.out]
        readable, writable, _ = select.select([pod, emu], writers, [], timeout)
        now = time.monotonic()
        for s in readable:
            try:
                data = s.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                return
            ways[s].take(data, now)
        for w in ways.values():
            w.release(now)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("listen")
    ap.add_argument("connect")
    ap.add_argument("--jitter-ms", nargs=2, type=float, required=True, metavar=("LO", "HI"))
    ap.add_argument("--seed", default="0")
    args = ap.parse_args(argv)
    lo, hi = (v / 1000 for v in args.jitter_ms)
    if not 0 <= lo <= hi:
        print(f"link_relay: jitter {args.jitter_ms} ms: need 0 <= LO <= HI", file=sys.stderr)
        return 2
    rng = random.Random(args.seed)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(args.listen)  # a stale socket file
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(args.listen)
    srv.listen(1)
    print("ready", flush=True)
    while True:
        pod, _ = srv.accept()
        emu = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            emu.connect(args.connect)
        except OSError as exc:
            print(f"link_relay: cannot connect to {args.connect}: {exc}", file=sys.stderr)
            pod.close()
            emu.close()
            continue
        try:
            relay(pod, emu, lo, hi, rng)
        finally:
            pod.close()
            emu.close()


if __name__ == "__main__":
    sys.exit(main())
