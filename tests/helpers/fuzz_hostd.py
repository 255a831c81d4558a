"""Fuzz a running hostd over MQTT: the rig (broker, an emulated pod, hostd as a process) and the loop.

The rig is real parts only: a private mosquitto (its own, or the test's), one
pod running the real firmware under micropython (emulator), ``hypnolum hostd``
as a subprocess reaching it through its pty, and a fuzz client publishing
:mod:`helpers.fuzz_payloads` shots at QoS 1.

The loop sends shots in batches. After each batch it waits for barriers
through hostd (an unparsable ``set`` and ``marker`` to an absent pod must be
answered: everything sent before them has been read), and every few batches
for a good command: a ``set`` to the online pod answered ``ok``. A crash is
hostd's process ending (whatever its status: nobody asked it to stop), or hostd
no longer answering. For each crash the loop reports the exit status, hostd's
own line about the failure and its last log lines, and finds the shot that
did it: hostd is restarted (retained poison cleared, a fresh MQTT session) and
the batch's shots are replayed one at a time, each followed by its barrier.
Then it restarts hostd again and goes on, up to ``max_crashes``.
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt

from hypnolum.broker import PrivateBroker
from hypnolum.emulator.runner import Emulator
from hypnolum.procs import die_with_parent

from helpers.fuzz_payloads import EEG_CIRCLES, POD, PREFIX, Shot, stream
from helpers.hostd import Hostd

HOST = "fuzz-host"
PROBE = "fz-probe"  # an id no pod has: its unparsable commands are answered at once
BARRIER_S = 10.0  # a barrier not answered within this: hostd is stuck
GOOD_S = 30.0  # a good command may wait for the pod to come back (it may be rebooting)
EXIT_WAIT_S = 15.0  # hostd winding down after a failure (it fades the pods first)
SETTLE_S = 0.3  # after a circles shot in a replay: no answer to wait for
GOOD_EVERY = 20  # batches between good commands
TAIL = 12  # log lines kept per crash
FAILURE_MARK = "ended unexpectedly"  # hostd's line when a task of its own has died: it is going down


@dataclass
class Crash:
    after: int  # shots sent before the batch that did it
    status: int | None  # hostd's exit status; None: still running but not answering
    said: str  # hostd's own line about the failure, if it wrote one
    tail: list[str]
    culprit: Shot | None = None
    saved: Path | None = None


@dataclass
class Report:
    seed: int
    sent: int = 0
    seconds: float = 0.0
    by_leaf: Counter = field(default_factory=Counter)
    by_kind: Counter = field(default_factory=Counter)
    answerable: Counter = field(default_factory=Counter)  # set/marker/participant shots hostd subscribes to
    answered: Counter = field(default_factory=Counter)  # their results seen on the broker
    crashes: list[Crash] = field(default_factory=list)
    good_ms: float | None = None  # the good command after the run: answered ok in this many ms
    restarts: int = 0
    pod_reboots: int = 0

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0


class FuzzedHostd(Hostd):
    """hostd for the fuzzer: it dies with the fuzzer, and its log is read as it grows (a fuzzed
    hostd logs tens of MB)."""

    def start(self) -> None:
        with open(self.log, "ab") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "hypnolum", "hostd", "--config", str(self.config)],
                                         stdout=subprocess.DEVNULL, stderr=err,
                                         preexec_fn=die_with_parent(signal.SIGTERM))
        self.read_to = 0

    def new_lines(self) -> list[str]:
        """The log lines written since the last call."""
        with open(self.log, "rb") as f:
            f.seek(self.read_to)
            data = f.read()
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next call
        self.read_to += end
        return data[:end].decode(errors="replace").splitlines()

    def tail(self, n: int) -> list[str]:
        with open(self.log, "rb") as f:
            f.seek(max(0, os.path.getsize(self.log) - 64 * 1024))
            return f.read().decode(errors="replace").splitlines()[-n:]


def take(shots_: Iterator[Shot], n: int) -> list[Shot]:
    return list(itertools.islice(shots_, n))


# -- the rig -------------------------------------------------------------------------------
class FuzzRig:
    """Broker (unless given a port), one emulated pod, hostd, and the fuzz client."""

    def __init__(self, workdir: Path, broker_port: int | None = None):
        self.dir = Path(workdir)
        self.port = broker_port
        self.broker: PrivateBroker | None = None
        self.emu: Emulator | None = None
        self.hostd: FuzzedHostd | None = None
        self.client: aiomqtt.Client | None = None
        self.runs = 0
        self.retained: set[str] = set()
        self.probe_answers: Counter = Counter()  # leaf -> results for PROBE
        self.answered: Counter = Counter()  # leaf -> results for every other id
        self.good: dict[str, dict] = {}  # good command id -> its result
        self._listener: asyncio.Task | None = None
        self._n = itertools.count(1)

    async def __aenter__(self) -> FuzzRig:
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.port is None:
            self.broker = PrivateBroker(self.dir / "mosquitto").start()
            self.port = self.broker.port
        self.emu = Emulator(1, self.dir / "emu")
        await self.emu.start()
        quiet = logging.getLogger("hypnolum.fuzz.mqtt")
        quiet.setLevel(logging.ERROR)  # not a warning per batch about pending publishes
        self.client = aiomqtt.Client("127.0.0.1", self.port, identifier="hypnolum-fuzz", max_inflight_messages=100,
                                     logger=quiet)
        await self.client.__aenter__()
        await self.client.subscribe(f"{PREFIX}/pods/+/+/result", qos=1)
        self._listener = asyncio.create_task(self._listen())
        await self.start_hostd()
        return self

    async def __aexit__(self, *exc) -> None:
        if self.hostd is not None:
            self.hostd.kill()
        with contextlib.suppress(aiomqtt.MqttError):
            await self.clear_retained()
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
        if self.client is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await self.client.__aexit__(None, None, None)
        if self.emu is not None:
            await self.emu.stop()
        if self.broker is not None:
            self.broker.stop()

    @property
    def pod_reboots(self) -> int:
        return self.emu.pods[0].counters.reboots if self.emu else 0

    async def _listen(self) -> None:
        async for msg in self.client.messages:
            parts = msg.topic.value.split("/")  # hypnolum/v1/pods/<id>/<leaf>/result
            pod_id, leaf = parts[3], parts[4]
            if pod_id == PROBE:
                self.probe_answers[leaf] += 1
                continue
            if pod_id == POD and leaf == "set":
                with contextlib.suppress(ValueError, AttributeError):
                    result = json.loads(msg.payload)
                    if str(result.get("id", "")).startswith("fz-good-"):
                        self.good[result["id"]] = result
                        continue
            self.answered[leaf] += 1

    # -- hostd --------------------------------------------------------------------------
    async def start_hostd(self) -> None:
        """A new hostd (its own directory, log and MQTT session), ready: a good command answered."""
        self.runs += 1
        run_dir = self.dir / f"hostd-{self.runs}"
        run_dir.mkdir(parents=True, exist_ok=True)
        self.hostd = FuzzedHostd(run_dir, self.port, pods_dir=self.dir / "emu", host_id=HOST,
                                 mqtt_extra=f'client_id = "hypnolum-fuzz-hostd-{self.runs}"',
                                 extra="command_wait_s = 0.2\n")
        for name, definition in EEG_CIRCLES.items():  # hostd reads these pods' EEG topics
            await self.publish(Shot("definition", name, json.dumps(definition).encode(), retain=True))
        self.hostd.start()
        if await self.good_command() is None:
            raise RuntimeError(f"hostd did not answer a good command after starting:\n{self.log_tail()}")

    async def restart_hostd(self) -> None:
        """Stop what is left of hostd, clear every retained shot, start a fresh one."""
        self.hostd.kill()
        await self.clear_retained()
        await self.start_hostd()

    def exited(self) -> int | None:
        return self.hostd.proc.poll()

    def failure_line(self) -> str:
        """hostd's first new line saying something failed, else ''."""
        return next((line for line in self.hostd.new_lines() if FAILURE_MARK in line), "")

    def log_tail(self, n: int = TAIL) -> str:
        return "\n".join(self.hostd.tail(n))

    async def wind_down(self) -> int | None:
        """hostd's exit status once it has ended (None if it is still running after EXIT_WAIT_S)."""
        deadline = time.monotonic() + EXIT_WAIT_S
        while self.exited() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return self.exited()

    # -- MQTT ---------------------------------------------------------------------------
    async def publish(self, shot: Shot) -> None:
        await self.client.publish(shot.topic, shot.payload, qos=1, retain=shot.retain)
        if shot.retain:
            self.retained.add(shot.topic)

    async def send(self, batch: list[Shot]) -> None:
        """Publish a batch in order (paho takes them in call order), pipelined."""
        try:
            await asyncio.gather(*(self.publish(s) for s in batch))
        except aiomqtt.MqttError as exc:
            shots_ = "\n".join(s.describe() for s in batch)
            raise RuntimeError(f"the broker dropped the fuzz client ({exc}) during this batch (see "
                               f"{self.dir / 'mosquitto'}):\n{shots_}") from None

    async def clear_retained(self) -> None:
        for topic in sorted(self.retained):
            await self.client.publish(topic, b"", qos=1, retain=True)
        self.retained.clear()

    async def barrier(self, leaves: tuple[str, ...] = ("set", "marker")) -> bool:
        """An unparsable message on each leaf for PROBE, answered: True. False: hostd did not
        answer within BARRIER_S, or ended."""
        before = {leaf: self.probe_answers[leaf] for leaf in leaves}
        for leaf in leaves:
            await self.client.publish(f"{PREFIX}/pods/{PROBE}/{leaf}", b"barrier", qos=1)
        deadline = time.monotonic() + BARRIER_S
        while any(self.probe_answers[leaf] <= before[leaf] for leaf in leaves):
            if self.exited() is not None or time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.005)
        return True

    async def good_command(self) -> float | None:
        """A good set for the online pod, answered ok: its latency in ms (re-sent while the pod
        is away, up to GOOD_S); None if it never was."""
        deadline = time.monotonic() + GOOD_S
        while time.monotonic() < deadline and self.exited() is None:
            cmd_id = f"fz-good-{next(self._n)}"
            level = 20 + len(self.good) % 200
            cmd = {"id": cmd_id, "scene": {"effect": "solid", "color": [level, 40, 10], "brightness": 0.3}}
            t0 = time.monotonic()
            await self.client.publish(f"{PREFIX}/pods/{POD}/set", json.dumps(cmd).encode(), qos=1)
            while cmd_id not in self.good and time.monotonic() - t0 < 3.0 and self.exited() is None:
                await asyncio.sleep(0.005)
            result = self.good.get(cmd_id)
            if result is not None and result.get("ok"):
                return (time.monotonic() - t0) * 1000
            await asyncio.sleep(0.2)  # not connected yet, or a timeout: the pod may be rebooting
        return None


# -- the loop --------------------------------------------------------------------------------
def answerable(shot: Shot) -> bool:
    """A set/marker/participant shot on a topic hostd subscribes to (one non-empty topic level)."""
    return shot.leaf in ("set", "marker", "participant") and bool(shot.name) and "/" not in shot.name


async def fuzz(rig: FuzzRig, count: int, seed: int = 1, batch: int = 50, max_crashes: int = 5,
               progress=None, skip_kinds: frozenset[str] = frozenset()) -> Report:
    """Send ``count`` shots (drawn ones of ``skip_kinds`` left out, to look past a known crash);
    see the module doc."""
    report = Report(seed)
    reboots0, runs0 = rig.pod_reboots, rig.runs
    t0 = time.monotonic()
    drawn = count * 4 if skip_kinds else count  # enough left after the skipped kinds
    source = stream(drawn, seed)
    shots_ = (s for s in source if s.kind not in skip_kinds)
    batches = 0
    previous: list[Shot] = []
    while report.sent < count and len(report.crashes) < max_crashes:
        chunk = await asyncio.to_thread(take, shots_, min(batch, count - report.sent))
        if not chunk:
            break
        await rig.send(chunk)
        for shot in chunk:
            report.by_leaf[shot.leaf] += 1
            report.by_kind[shot.kind] += 1
            report.answerable[shot.leaf] += answerable(shot)
        sent_before, report.sent = report.sent, report.sent + len(chunk)
        batches += 1
        alive = await rig.barrier()
        if alive and batches % GOOD_EVERY == 0:
            alive = await rig.good_command() is not None
        failure = rig.failure_line()
        report.seconds = time.monotonic() - t0
        if alive and not failure and rig.exited() is None:
            previous = chunk
            if progress:
                progress(report)
            continue
        crash = await _crash(rig, sent_before, failure)
        report.crashes.append(crash)
        # a circles failure may show only after the next barrier: the batch before is a suspect too
        crash.culprit = await find_culprit(rig, previous + chunk)
        if crash.culprit is not None:
            crash.saved = rig.dir / f"crash-{len(report.crashes)}.bin"
            crash.saved.write_bytes(crash.culprit.payload)
        await rig.restart_hostd()
        previous = []
        if progress:
            progress(report)
    source.close()  # stops the drawing process
    await asyncio.sleep(0.5)  # the last answers (a valid command for an absent pod waits command_wait_s)
    if rig.exited() is None and not rig.failure_line():
        report.good_ms = await rig.good_command()
    elif len(report.crashes) < max_crashes:  # ended after the last barrier
        report.crashes.append(await _crash(rig, report.sent, ""))
    report.answered = Counter(rig.answered)
    report.seconds = time.monotonic() - t0
    report.pod_reboots = rig.pod_reboots - reboots0
    report.restarts = rig.runs - runs0
    return report


async def _crash(rig: FuzzRig, after: int, said: str) -> Crash:
    status = await rig.wind_down()
    said = said or rig.failure_line()
    return Crash(after, status, said, rig.log_tail().splitlines())


async def find_culprit(rig: FuzzRig, chunk: list[Shot]) -> Shot | None:
    """Replay ``chunk`` one shot at a time against a fresh hostd: the first shot after which
    hostd fails. None if none does on its own."""
    answered = Counter(rig.answered)  # replayed shots are answered again: not counted twice
    try:
        return await _replay(rig, chunk)
    finally:
        rig.answered = answered


async def _replay(rig: FuzzRig, chunk: list[Shot]) -> Shot | None:
    await rig.restart_hostd()
    for shot in chunk:
        await rig.publish(shot)
        if shot.leaf in ("set", "marker", "participant"):  # participant: read in turn with markers
            alive = await rig.barrier(("set",) if shot.leaf == "set" else ("marker",))
        else:
            await asyncio.sleep(SETTLE_S)
            alive = await rig.barrier()
        if not alive or rig.failure_line() or rig.exited() is not None:
            await rig.wind_down()
            return shot
    return None


def summary(r: Report) -> str:
    """The report as the bench prints it (and a failing test shows it)."""
    lines = [
        f"mqtt fuzz: {r.sent} payloads sent to hostd in {r.seconds:.1f} s ({r.rate:.0f} payloads/s), seed {r.seed}",
        "  per topic: " + ", ".join(f"{leaf} {n}" for leaf, n in sorted(r.by_leaf.items())),
        "  per kind:  " + ", ".join(f"{kind} {n}" for kind, n in sorted(r.by_kind.items())),
        "  answered:  " + ", ".join(f"{leaf}/result {r.answered[leaf]} of {r.answerable[leaf]}"
                                    for leaf in ("set", "marker", "participant")),
        f"  hostd exits/crashes: {len(r.crashes)}"
        + (f" (hostd restarted {r.restarts} times to go on and to find each culprit)" if r.crashes else ""),
    ]
    for i, c in enumerate(r.crashes, 1):
        status = "still running but not answering" if c.status is None else f"exited with status {c.status}"
        lines.append(f"  crash {i}: after {c.after} payloads, hostd {status}")
        if c.culprit is not None:
            lines += [f"    killed by: {c.culprit.describe()}", f"    payload saved to {c.saved}"]
        else:
            lines.append("    no single payload of the last two batches does it on its own")
        if c.said:
            lines.append(f"    hostd said: {c.said[:600]}")
        lines += ["    last log lines:"] + [f"      {line[:300]}" for line in c.tail]
    lines.append("  good command after: " + ("NOT answered ok" if r.good_ms is None
                                              else f"answered ok in {r.good_ms:.0f} ms"))
    lines.append(f"  emulated pod reboots during the run: {r.pod_reboots}")
    return "\n".join(lines)
