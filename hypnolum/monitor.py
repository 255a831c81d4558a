"""``hypnolum monitor``: every pod a broker knows, live, in a terminal (docs/cli.md).

    hypnolum monitor [--config hostd.toml] [--once] [--interval S]

It reads only what hostd publishes for everyone (docs/mqtt.md): the retained
pod states and availability, the hosts' availability and the pods' live LED
colours (``leds``). The EEG rate is worked out from the states' sample counts,
so the raw EEG is never read. On a terminal the table redraws in place; when
stdout is not a terminal it is printed every ``--interval`` seconds, and with
``--once`` printed once after ``--settle`` seconds. The table fits 80 columns
and uses more columns when there are more.

A payload that cannot be read (not JSON, not an object) is counted and named
in the header, and the monitor goes on. Exit status: 0 (stopped by Ctrl-C or
SIGTERM, or ``--once`` done), 2 usage error, 3 no broker (or, with ``--once``,
no pod known).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiomqtt
from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.live import Live
from rich.table import Table
from rich.text import Text

from . import mqtt_options as mo
from . import pod_view as pv
from .host.broker import Broker, read_until
from .host.config import MqttConfig
from .host.topics import PREFIX

FILTERS = (f"{PREFIX}/pods/+/state", f"{PREFIX}/pods/+/availability", f"{PREFIX}/pods/+/leds",
           f"{PREFIX}/hosts/+/availability")
RATE_WINDOW_S = 5.0  # EEG rate: sample counts of the states within this span
WIDE = 110  # from this many columns on: the LED strip, lost samples and round-trip time
LED_CELLS = 16
LINK_STYLE = {"online": "bold green", "connecting": "yellow", "refused": "bold red", "offline": "red"}


@dataclass
class PodRow:
    pod_id: str
    availability: str | None = None
    state: dict[str, Any] = field(default_factory=dict)
    counts: deque = field(default_factory=lambda: deque(maxlen=64))  # (host time s, eeg.samples)
    leds: str | None = None  # the `leds` topic's rgb hex string

    @property
    def link(self) -> str:
        """``online`` from availability; ``offline`` from it too unless the state says why
        (connecting, refused): a dead hostd leaves its last state, "online", retained."""
        if self.availability == "online":
            return "online"
        link = self.state.get("link")
        if self.availability == "offline" and link not in ("connecting", "refused"):
            return "offline"
        return str(link or self.availability or "-")

    def eeg_rate(self) -> float | None:
        if self.link != "online" or len(self.counts) < 2:
            return None
        (t0, n0), (t1, n1) = self.counts[0], self.counts[-1]
        return (n1 - n0) / (t1 - t0) if t1 - t0 >= 0.5 else None


def _host_time(state: dict[str, Any]) -> float | None:
    try:
        return datetime.fromisoformat(str(state["updated"])).timestamp()
    except (KeyError, ValueError, TypeError):
        return None


class MonitorModel:
    """What the monitor knows; fed MQTT messages, rendered at the console's width. No I/O."""

    def __init__(self, where: str = "") -> None:
        self.where = where
        self.pods: dict[str, PodRow] = {}
        self.hosts: dict[str, str] = {}
        self.refused = 0  # payloads that could not be read
        self.last_refused = ""
        self.connected = False

    # -- input --------------------------------------------------------------------
    def on_message(self, topic: str, payload: bytes) -> None:
        parts = topic.split("/")
        if len(parts) == 5 and parts[2] == "hosts" and parts[4] == "availability":
            self.hosts[parts[3]] = payload.decode(errors="replace")
            return
        if len(parts) != 5 or parts[2] != "pods" or not parts[3] or parts[4] not in ("availability", "state", "leds"):
            return
        leaf = parts[4]
        data = None if leaf == "availability" or (leaf == "state" and not payload) else self._json(topic, payload)
        if leaf != "availability" and payload and data is None:
            return  # unreadable: counted, and no row for it
        row = self.pods.get(parts[3])
        if row is None:
            row = self.pods[parts[3]] = PodRow(parts[3])
        if leaf == "availability":
            row.availability = payload.decode(errors="replace")
        elif leaf == "state":
            self._state(row, data)
        elif data is not None and isinstance(data.get("rgb"), str):
            row.leds = data["rgb"]

    def _json(self, topic: str, payload: bytes) -> dict[str, Any] | None:
        try:
            data = json.loads(payload)
        except ValueError as exc:
            return self._refuse(topic, f"not JSON ({exc})")
        if not isinstance(data, dict):
            return self._refuse(topic, "not a JSON object")
        return data

    def _refuse(self, topic: str, why: str) -> None:
        self.refused += 1
        self.last_refused = f"{topic}: {why}"

    def _state(self, row: PodRow, state: dict[str, Any] | None) -> None:
        if state is None:  # a retained state cleared
            row.state, row.counts = {}, deque(maxlen=64)
            return
        row.state = state
        samples = (state.get("eeg") or {}).get("samples") if isinstance(state.get("eeg"), dict) else None
        t = _host_time(state)
        if not isinstance(samples, int) or t is None:
            return
        if row.counts and (samples < row.counts[-1][1] or t < row.counts[-1][0]):
            row.counts.clear()  # a new stream, or a restarted hostd
        row.counts.append((t, samples))
        while row.counts and row.counts[0][0] < t - RATE_WINDOW_S:
            row.counts.popleft()

    # -- output -------------------------------------------------------------------
    def header(self) -> Text:
        online = sum(1 for r in self.pods.values() if r.link == "online")
        t = Text()
        t.append("hypnolum monitor", style="bold magenta")
        t.append(f"  {self.where}  ")
        t.append("connected" if self.connected else "not connected", style="green" if self.connected else "bold red")
        t.append(f"  {time.strftime('%H:%M:%S')}\n")
        hosts = ", ".join(f"{h} {a}" for h, a in sorted(self.hosts.items())) or "none seen"
        t.append(f"pods {len(self.pods)} ({online} online) · hosts: {hosts}")
        if self.refused:
            t.append(f"\n{self.refused} unreadable payload(s), last: {self.last_refused}", style="yellow")
        return t

    def table(self, width: int) -> Table:
        wide = width >= WIDE
        t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1), collapse_padding=True,
                  header_style="bold", expand=False)
        t.add_column("pod", no_wrap=True, overflow="ellipsis", max_width=24 if wide else 14)
        t.add_column("link", no_wrap=True, overflow="ellipsis")
        t.add_column("scene", overflow="fold")
        t.add_column("bri", justify="right", no_wrap=True)
        if wide:
            t.add_column("LEDs", no_wrap=True, min_width=LED_CELLS)
        t.add_column("safety", overflow="fold")
        t.add_column("EEG/s", justify="right", no_wrap=True)
        if wide:
            t.add_column("lost", justify="right", no_wrap=True)
        t.add_column("quality", overflow="fold")
        t.add_column("clock", no_wrap=True)
        if wide:
            t.add_column("rtt", justify="right", no_wrap=True)
        for pod_id in sorted(self.pods):
            t.add_row(*self._cells(self.pods[pod_id], wide))
        return t

    def _cells(self, row: PodRow, wide: bool) -> list[Any]:
        state = row.state
        rate = row.eeg_rate()
        scene = pv.effect(state)
        source = pv.scene(state).get("source")
        if wide and source:
            scene += f" ({source})"
        safety = pv.safety(state, short=True)
        cells: list[Any] = [
            row.pod_id,
            Text(row.link, style=LINK_STYLE.get(row.link, "dim")),
            scene,
            pv.brightness_pct(state),
        ]
        if wide:
            cells.append(_strip(row.leds))
        cells += [
            Text(", ".join(safety) or "-", style="yellow" if safety else "dim"),
            "-" if rate is None else f"{rate:.0f}",
        ]
        if wide:
            eeg = state.get("eeg") if isinstance(state.get("eeg"), dict) else {}
            cells.append(str(eeg.get("samples_lost", "-")))
        marks = pv.quality_marks(state)
        cells += [Text(marks, style="" if set(marks) <= {"o", "-"} else "yellow"), pv.clock_words(state, short=True)]
        if wide:
            host = ((state.get("counters") or {}).get("host") or {}) if isinstance(state.get("counters"), dict) else {}
            rtt = host.get("rtt_ms")
            cells.append(f"{rtt:.1f} ms" if isinstance(rtt, (int, float)) else "-")
        return cells

    def view(self) -> MonitorView:
        return MonitorView(self)


def _strip(rgb: str | None) -> Text:
    """The `leds` segments as coloured blocks, at most LED_CELLS of them."""
    if not rgb or len(rgb) % 6:
        return Text("-", style="dim")
    colours = [rgb[i:i + 6] for i in range(0, len(rgb), 6)]
    if len(colours) > LED_CELLS:
        colours = [colours[round(i * (len(colours) - 1) / (LED_CELLS - 1))] for i in range(LED_CELLS)]
    text = Text()
    for c in colours:
        text.append("·" if c == "000000" else "█", style="grey35" if c == "000000" else f"#{c}")
    return text


class MonitorView:
    """The monitor's screen, laid out for the width it is drawn at."""

    def __init__(self, model: MonitorModel) -> None:
        self.model = model

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        m = self.model
        parts: list[Any] = [m.header()]
        if m.pods:
            parts += [m.table(options.max_width), Text(pv.QUALITY_LEGEND, style="dim")]
        else:
            parts.append(Text("no pods known yet: waiting for hostd's retained states", style="dim"))
        yield Group(*parts)


# -- running ------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hypnolum monitor",
                                description="Live terminal view of every pod a broker knows (hostd's retained states).",
                                epilog="exit status: 0 stopped (or --once done), 2 usage error, 3 no broker "
                                       "(--once: or no pod known)")
    p.add_argument("--once", action="store_true", help="print the table once (after --settle seconds) and exit")
    p.add_argument("--settle", type=float, default=2.5, metavar="S",
                   help="with --once: how long to listen first (default 2.5 s: two states give the EEG rate)")
    p.add_argument("--interval", type=float, default=5.0, metavar="S",
                   help="when stdout is not a terminal: print the table every S seconds (default 5)")
    mo.add_arguments(p)
    return p


class Monitor:
    def __init__(self, args: argparse.Namespace, cfg: MqttConfig, console: Console) -> None:
        self.args, self.cfg, self.console = args, cfg, console
        self.model = MonitorModel(f"{cfg.host}:{cfg.port}")
        self.stop = asyncio.Event()
        self.broker = Broker(cfg)

    async def _serve(self, client: aiomqtt.Client) -> None:
        for topic in FILTERS:
            await mo.subscribe(client, topic, qos=0 if topic.endswith("/leds") else 1)
        self.model.connected = True
        try:
            await read_until(client, self.stop,
                             lambda message: self.model.on_message(message.topic.value, bytes(message.payload or b"")))
        finally:
            self.model.connected = False

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop.set)
        keeper = asyncio.create_task(self.broker.keep("monitor", mo.client_id(self.cfg, "monitor"), self._serve,
                                                      self.stop, level=logging.DEBUG))
        try:
            while not self.model.connected and not self.broker.losses["monitor"] and not keeper.done():
                await asyncio.sleep(0.02)
            if keeper.done():
                keeper.result()  # its Unreachable (a refused subscription)
            if not self.model.connected:
                raise mo.Unreachable(f"cannot connect to the MQTT broker {self.broker.where}")
            return await self._show()
        finally:
            self.stop.set()
            await asyncio.gather(keeper, return_exceptions=True)

    async def _show(self) -> int:
        view = self.model.view()
        if self.args.once:
            await self._pause(self.args.settle)
            self.console.print(view)
            return mo.EXIT_OK if self.model.pods else mo.EXIT_NO_ANSWER
        if not self.console.is_terminal:
            while not self.stop.is_set():
                await self._pause(min(1.0, self.args.interval))
                self.console.print(view)
                await self._pause(self.args.interval - min(1.0, self.args.interval))
            return mo.EXIT_OK
        with Live(view, console=self.console, auto_refresh=False, screen=False) as live:
            while not self.stop.is_set():
                live.update(view, refresh=True)
                await self._pause(0.5)
        return mo.EXIT_OK

    async def _pause(self, seconds: float) -> None:
        try:
            async with asyncio.timeout(seconds):
                await self.stop.wait()
        except TimeoutError:
            pass


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)

    def run() -> int:
        if not 0 < args.interval <= 3600 or not 0 <= args.settle <= 600:
            raise mo.UsageError("hypnolum monitor: --interval must be in (0, 3600] s and --settle in [0, 600] s")
        return asyncio.run(Monitor(args, mo.mqtt_config(args), Console()).run())

    return mo.run_tool(run, "hypnolum monitor", interrupted=0)
