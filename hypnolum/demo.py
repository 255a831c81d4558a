"""``hypnolum demo``: emulated pods, hostd and a private broker, watched live.

    hypnolum demo [--pods 4] [--duration 30 | --forever] [--plain] [--keep]

It starts, in a new temporary directory,

* a private mosquitto on a free loopback port (:class:`hypnolum.broker.PrivateBroker`);
* N emulated pods in this process (:class:`hypnolum.emulator.runner.Emulator`): the
  real firmware under MicroPython, each pod's link on a pty ``<dir>/emu/<pod_id>.tty``;
* hostd as a subprocess (``python -m hypnolum hostd --config <dir>/hostd.toml``),
  its log in ``<dir>/hostd.log``;

waits until every pod is ``online`` on MQTT, then sends scene changes on
``hypnolum/v1/pods/<pod_id>/set`` (breathe at 4 s, solid at 12 s, a faster
breathe at 20 s, repeating every 24 s) and shows, per pod, the link, the LEDs
the emulator captured, the EEG rate measured from the ``/eeg`` messages, the
sample gaps, hostd's frame counters and the command results. On a terminal this
is a rich live view; otherwise (or with ``--plain``) one line per pod every 5 s.

While it runs, the broker's address is in a small JSON file (console/demo_link.py:
``$HYPNOLUM_DEMO_FILE``, else ``$XDG_RUNTIME_DIR/hypnolum-demo.json``, else
``~/.cache/hypnolum/demo.json``), removed when the demo ends, so that
``hypnolum console --demo`` (``make console``) finds it.

It ends after ``--duration`` seconds of show (or on Ctrl-C / SIGTERM), stops
hostd with SIGTERM, then the emulator and the broker, and prints a summary.
Exit status: 0 when every pod came online, streamed EEG and acknowledged every
command; 1 on a failure (with the reason and hostd's log); 130 when interrupted
before a timed run finished. A ``--forever`` demo ends only by being stopped: 0
then, whatever it was doing.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.text import Text

from .demo_view import DemoModel, scene_summary
from .procs import die_with_parent

HOST_ID = "demo-host"
ONLINE_TIMEOUT_S = 30.0
HOSTD_STOP_S = 10.0
RESULT_GRACE_S = 3.0  # hostd gives up on a command after ~2 s (4 attempts x 0.5 s)
PLAIN_EVERY_S = 5.0
REFRESH_S = 0.2

PALETTE = [
    (255, 120, 40),
    (40, 160, 255),
    (190, 60, 255),
    (60, 255, 120),
    (255, 50, 110),
    (255, 220, 60),
    (0, 230, 230),
    (255, 255, 255),
]

# (offset in the 24 s cycle, name, scene for pod number i)
SCHEDULE_PERIOD_S = 24.0
SCHEDULE = [
    (4.0, "breathe", lambda i: {"effect": "breathe", "color": list(PALETTE[i % 8]), "brightness": 0.6,
                                "transition_ms": 500, "period_ms": 4000}),
    (12.0, "solid", lambda i: {"effect": "solid", "color": list(PALETTE[(i + 3) % 8]), "brightness": 0.5,
                               "transition_ms": 800}),
    (20.0, "breathe", lambda i: {"effect": "breathe", "color": list(PALETTE[(i + 5) % 8]), "brightness": 0.7,
                                 "transition_ms": 500, "period_ms": 2000}),
]


class DemoError(RuntimeError):
    pass


class Interrupted(Exception):
    pass


_hostd_preexec = die_with_parent(signal.SIGTERM)  # hostd stops if the demo dies


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) or "(empty)"
    except OSError:
        return "(no log)"


def _toml_str(s: str) -> str:
    return json.dumps(s)  # a JSON string is a TOML basic string


class Demo:
    def __init__(self, args: argparse.Namespace, console: Console):
        self.args = args
        self.console = console
        self.live_view = console.is_terminal and not args.plain
        self.workdir = Path(tempfile.mkdtemp(prefix="hypnolum-demo-"))
        self.pod_ids = [f"pod-{i:02d}" for i in range(1, args.pods + 1)]
        self.model = DemoModel(self.pod_ids)
        self.stop = asyncio.Event()
        self.signal_name = ""
        self.broker = None
        self.emu = None
        self.hostd: asyncio.subprocess.Process | None = None
        self.hostd_log = self.workdir / "hostd.log"
        self.client = None
        self.show_start: float | None = None
        self.phase = "starting"
        self.fired: set[tuple[int, int]] = set()  # (cycle, schedule index)
        self.cmd_no = 0
        self.failure = ""
        self.cut_short = False  # stopped before the show could judge the pods
        self.model.clock = self.elapsed

    # -- helpers ----------------------------------------------------------
    def say(self, msg: str) -> None:
        self.console.print(msg, highlight=False, markup=False, soft_wrap=True)

    def _on_signal(self, signame: str) -> None:
        self.signal_name = self.signal_name or signame
        self.stop.set()

    async def _or_stop(self, aw):
        """Await ``aw`` unless a stop is requested first (then Interrupted)."""
        task = asyncio.ensure_future(aw)
        stopper = asyncio.create_task(self.stop.wait())
        try:
            done, _ = await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        if task in done:
            return task.result()
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        raise Interrupted

    def elapsed(self) -> float:
        return 0.0 if self.show_start is None else time.monotonic() - self.show_start

    def leds(self) -> dict[str, bytes | None]:
        if self.emu is None:
            return {}
        return {pod.pod_id: pod.leds.last_rgb() for pod in self.emu.pods}

    def header(self) -> Text:
        a = self.args
        t = Text()
        t.append("hypnolum demo", style="bold magenta")
        t.append(f"  {a.pods} pods · broker 127.0.0.1:{self.broker.port if self.broker else '-'}")
        if self.hostd is not None:
            t.append(f" · hostd pid {self.hostd.pid} ({self.model.host_availability})")
        t.append("\n")
        if self.show_start is None:
            t.append(f"{self.phase}", style="yellow")
        else:
            el = self.elapsed()
            t.append(f"elapsed {el:5.1f} s", style="bold")
            if a.forever:
                t.append(" · runs until Ctrl-C")
            else:
                t.append(f" · remaining {max(0.0, a.duration - el):5.1f} s")
            nxt = self._next_event()
            if nxt is not None:
                t.append(f" · next: {nxt[1]} at {nxt[0]:.0f} s", style="dim")
        return t

    def _next_event(self) -> tuple[float, str] | None:
        el = self.elapsed()
        cycle = int(el // SCHEDULE_PERIOD_S)
        for c in (cycle, cycle + 1):
            for offset, name, _scene in SCHEDULE:
                at = c * SCHEDULE_PERIOD_S + offset
                if at > el and (self.args.forever or at <= self.args.duration - 1.0):
                    return at, name
        return None

    def render(self):
        return self.model.renderable(self.header(), self.leds(), footer=f"Ctrl-C stops · workdir {self.workdir}")

    # -- the parts ----------------------------------------------------------
    async def start_broker(self) -> None:
        from .broker import BrokerError, PrivateBroker

        self.phase = "starting mosquitto"
        self.broker = PrivateBroker(self.workdir / "mosquitto")
        try:
            await asyncio.to_thread(self.broker.start)
        except BrokerError as exc:
            raise DemoError(str(exc)) from None
        self.say(f"mosquitto on 127.0.0.1:{self.broker.port}")
        from .console import demo_link

        try:
            demo_link.write("127.0.0.1", self.broker.port, HOST_ID, self.pod_ids, str(self.workdir))
        except OSError as exc:  # the console cannot find this demo; the demo itself goes on
            self.say(f"cannot write {demo_link.demo_file()} for `hypnolum console --demo`: {exc}")

    async def start_emulator(self) -> None:
        from .emulator.pod import PodError
        from .emulator.runner import Emulator

        self.phase = f"booting {self.args.pods} emulated pods"
        self.emu = Emulator(self.args.pods, self.workdir / "emu", seed=self.args.seed, led_count=self.args.led_count,
                            record_frames=self.workdir / "frames")  # what each strip showed, for the report
        try:
            await self._or_stop(self.emu.start())
            await self._or_stop(self.emu.wait_links(20))
        except PodError as exc:
            raise DemoError(f"the emulated pods did not start: {exc}") from None
        self.say(f"{self.args.pods} emulated pods up: " + ", ".join(p.pod_id for p in self.emu.pods))

    async def start_hostd(self) -> None:
        conf = self.workdir / "hostd.toml"
        conf.write_text(
            f"[host]\nid = {_toml_str(HOST_ID)}\n\n"
            f"[mqtt]\nhost = \"127.0.0.1\"\nport = {self.broker.port}\n\n"
            f"[serial]\nports = [{_toml_str(str(self.emu.workdir / '*.tty'))}]\n\n"
            # every pod's EEG, scenes and markers, for `hypnolum report` (docs/report.md)
            f"[recorder]\nenabled = true\ndir = {_toml_str(str(self.workdir / 'recordings'))}\n"
        )
        log = open(self.hostd_log, "ab")
        try:
            self.hostd = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "hypnolum", "hostd", "--config", str(conf),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # Ctrl-C reaches the demo only; the demo stops hostd in order
                preexec_fn=_hostd_preexec,
            )
        finally:
            log.close()
        self.say(f"hostd started (pid {self.hostd.pid}), log {self.hostd_log}")

    async def stop_hostd(self) -> int | None:
        proc, self.hostd = self.hostd, None
        if proc is None:
            return None
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(HOSTD_STOP_S):
                    await proc.wait()
            except TimeoutError:
                self.say(f"hostd did not stop within {HOSTD_STOP_S:.0f} s of SIGTERM: killing it")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        return proc.returncode

    async def consume(self, client) -> None:
        async for msg in client.messages:
            self.model.on_message(str(msg.topic), msg.payload)

    async def send_scene(self, index: int, name: str, make_scene) -> None:
        self.cmd_no += 1
        for i, pod_id in enumerate(self.pod_ids):
            scene = make_scene(i)
            cmd_id = f"demo-{self.cmd_no}-{pod_id}"
            self.model.command_sent(pod_id, cmd_id, scene)
            await self.client.publish(f"hypnolum/v1/pods/{pod_id}/set", json.dumps({"id": cmd_id, "scene": scene}), qos=1)
        msg = f"sent {name} to {len(self.pod_ids)} pods (demo-{self.cmd_no}-*)"
        self.model.event(msg)
        if not self.live_view:
            self.say(f"{self.elapsed():5.1f} s  {msg}: " + ", ".join(scene_summary(make_scene(i)) for i in range(len(self.pod_ids))))

    async def fire_due(self) -> None:
        el = self.elapsed()
        cycle = int(el // SCHEDULE_PERIOD_S)
        for index, (offset, name, make_scene) in enumerate(SCHEDULE):
            at = cycle * SCHEDULE_PERIOD_S + offset
            if el >= at and (cycle, index) not in self.fired:
                self.fired.add((cycle, index))
                if self.args.forever or at <= self.args.duration - 1.0:
                    await self.send_scene(index, name, make_scene)

    # -- the run ------------------------------------------------------------
    async def run(self) -> int:
        import aiomqtt

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, sig.name)
        self.say(f"hypnolum demo: {self.args.pods} pods, workdir {self.workdir}")
        status = 1
        consumer = None
        live = None
        try:
            await self.start_broker()
            if self.stop.is_set():
                raise Interrupted
            await self.start_emulator()
            async with aiomqtt.Client("127.0.0.1", self.broker.port, identifier=f"hypnolum-demo-{os.getpid()}") as client:
                self.client = client
                await client.subscribe("hypnolum/v1/#", qos=1)
                consumer = asyncio.create_task(self.consume(client), name="mqtt")
                await self.start_hostd()
                if self.live_view:
                    live = Live(self.render(), console=self.console, auto_refresh=False, transient=False)
                    live.start()
                try:
                    status = await self.show(consumer, live)
                finally:
                    await self.finish_commands(consumer, live)
                    if live is not None:
                        live.update(self.render(), refresh=True)
                        live.stop()
                    code = await self.stop_hostd()
                    if code not in (0, None):
                        self.failure = self.failure or f"hostd exited with status {code}"
                    consumer.cancel()
                    with contextlib.suppress(BaseException):
                        await consumer
        except Interrupted:
            self.cut_short = True
            status = 0 if self.args.forever else 130  # a --forever demo ends only by a stop
        except DemoError as exc:
            self.failure = str(exc)
        except aiomqtt.MqttError as exc:
            self.failure = f"MQTT: {exc}"
        finally:
            if live is not None and live.is_started:
                live.stop()
            await self.stop_hostd()
            if self.emu is not None:
                await self.emu.stop()
            if self.broker is not None:
                from .console import demo_link

                demo_link.remove()
                await asyncio.to_thread(self.broker.stop)
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        return self.summary(status)

    async def show(self, consumer: asyncio.Task, live: Live | None) -> int:
        """Wait for the pods, then run the schedule; returns the exit status so far."""
        self.phase = "waiting for every pod to come online"
        t_wait = time.monotonic()
        last_plain = 0.0
        while self.show_start is None:
            self._check(consumer)
            if self.model.all_online():
                self.show_start = time.monotonic()
                msg = f"all {self.args.pods} pods online after {self.show_start - t_wait:.1f} s"
                self.model.event(msg)
                if not self.live_view:
                    self.say(msg)
                break
            waited = time.monotonic() - t_wait
            if waited > self.args.online_timeout:
                missing = [
                    f"{p.pod_id} ({'no state from hostd yet' if p.link == '-' else p.link}"
                    f"{': ' + p.state.get('reason') if p.state.get('reason') else ''})"
                    for p in self.model.pods.values()
                    if p.availability != "online"
                ]
                raise DemoError(f"pods never came online within {self.args.online_timeout:g} s: {', '.join(missing)}")
            self.phase = f"waiting for every pod to come online ({waited:.1f} s)"
            if live is not None:
                live.update(self.render(), refresh=True)
            if await self._sleep():
                raise Interrupted
        while True:
            self._check(consumer)
            await self.fire_due()
            el = self.elapsed()
            if live is not None:
                live.update(self.render(), refresh=True)
            elif el - last_plain >= PLAIN_EVERY_S:
                last_plain = el
                for line in self.model.lines(el, self.leds()):
                    self.say(line)
            if not self.args.forever and el >= self.args.duration:
                return 0
            if await self._sleep():
                return 0 if self.args.forever else 130

    async def _sleep(self) -> bool:
        """One refresh period; True if a stop was requested."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(REFRESH_S):
                await self.stop.wait()
        return self.stop.is_set()

    def _check(self, consumer: asyncio.Task) -> None:
        if self.hostd is not None and self.hostd.returncode is not None:
            raise DemoError(f"hostd exited unexpectedly with status {self.hostd.returncode}")
        if consumer.done():
            exc = None if consumer.cancelled() else consumer.exception()
            raise DemoError(f"lost the MQTT connection: {exc!r}")

    async def finish_commands(self, consumer: asyncio.Task, live: Live | None) -> None:
        """Give outstanding commands a moment to be answered (a shorter one after a signal)."""
        deadline = time.monotonic() + (1.0 if self.stop.is_set() else RESULT_GRACE_S)
        while self.model.pending() and not consumer.done() and time.monotonic() < deadline:
            if live is not None:
                live.update(self.render(), refresh=True)
            await asyncio.sleep(0.1)

    def summary(self, status: int) -> int:
        el = self.elapsed()
        self.say("")
        if self.show_start is not None:
            self.say(f"summary after {el:.1f} s of show (broker port {self.broker.port if self.broker else '-'}):")
        problems = []
        for p in self.model.pods.values():
            no_answer = len(p.pending)
            self.say(
                f"  {p.pod_id}  samples {p.samples}  gaps {p.gaps}  commands {p.ok} ok / {p.failed} failed"
                + (f" / {no_answer} unanswered" if no_answer else "")
                + f"  frames {p.frames_rx} rx / {p.frames_bad} bad"
            )
            if self.show_start is not None and status == 0 and not self.cut_short:
                if p.samples == 0:
                    problems.append(f"{p.pod_id} sent no EEG")
                if p.failed:
                    problems.append(f"{p.pod_id}: {p.failed} commands failed ({p.last_result})")
                if no_answer and not self.signal_name:  # a signal may cut a command short
                    problems.append(f"{p.pod_id}: {no_answer} commands got no result")
        if self.emu is not None:
            for pod in self.emu.pods:
                c = pod.counters
                if c.crashes or c.watchdog_resets:
                    self.say(f"  {pod.pod_id} emulator: {c.crashes} crashes, {c.watchdog_resets} watchdog resets")
        if self.failure:
            status = 1
            self.say(f"hypnolum demo FAILED: {self.failure}")
        elif problems:
            status = 1
            self.say("hypnolum demo FAILED: " + "; ".join(problems))
        elif status == 130:
            self.say(f"hypnolum demo interrupted ({self.signal_name or 'stop'})")
        else:
            self.say("hypnolum demo ok")
        if status == 1:
            self.say(f"--- hostd log ({self.hostd_log}), last lines ---\n{_tail(self.hostd_log)}")
            if self.emu is not None:
                for pod in self.emu.pods:
                    if pod.counters.crashes or pod.counters.watchdog_resets:
                        self.say(f"--- {pod.pod_id} micropython log ---\n{pod.tail(20)}")
            self.say(f"(files kept in {self.workdir})")
        elif self.args.keep:
            self.say(f"(files kept in {self.workdir})")
            for bdf in sorted((self.workdir / "recordings").glob("*.bdf")):
                pod = bdf.name.split("_")[0]
                self.say(f"debrief: hypnolum report {bdf} --frames {self.workdir / 'frames' / (pod + '.frames')} "
                         f"--html {pod}-report.html")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return status


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hypnolum demo",
        description="Emulated pods, hostd and a private mosquitto, with scene changes over MQTT, shown live.",
    )
    p.add_argument("--pods", type=int, default=4, help="number of emulated pods (default 4)")
    p.add_argument("--duration", type=float, default=30.0, metavar="S", help="seconds of show once the pods are online (default 30)")
    p.add_argument("--forever", action="store_true", help="run until Ctrl-C (scenes repeat every 24 s)")
    p.add_argument("--plain", action="store_true", help="no live view: a line per pod every 5 s (the default when stdout is not a terminal)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, configs)")
    p.add_argument("--led-count", type=int, default=30, help="LEDs per pod (default 30)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic EEG, clocks and ids")
    p.add_argument("--online-timeout", type=float, default=ONLINE_TIMEOUT_S, metavar="S",
                   help=f"give up if the pods are not online after S seconds (default {ONLINE_TIMEOUT_S:.0f})")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.pods < 1 or args.pods > 99:
        print("hypnolum demo: --pods must be between 1 and 99", file=sys.stderr)
        return 2
    if args.duration <= 0:
        print("hypnolum demo: --duration must be positive", file=sys.stderr)
        return 2
    console = Console()
    demo = Demo(args, console)
    try:
        return asyncio.run(demo.run())
    except KeyboardInterrupt:  # a Ctrl-C before the handlers were installed
        return 130


if __name__ == "__main__":
    sys.exit(main())
