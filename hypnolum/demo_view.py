"""What ``hypnolum demo`` knows about each pod, and how it shows it.

:class:`DemoModel` is fed every MQTT message under ``hypnolum/v1/`` (see
docs/mqtt.md) plus the emulator's LED frames, and renders either a rich
table for the live view or compact text lines when stdout is not a terminal.
Nothing here does I/O, so the demo's loop decides when to draw.
"""
from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import dataclass, field

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.table import Table
from rich.text import Text

PREFIX = "hypnolum/v1/pods/"
LED_SAMPLES = 24  # LEDs shown per pod
LED_SAMPLES_NARROW = 12  # ... on a narrow terminal
WIDE = 100  # from this many columns on: every column, the full LED strip
RATE_WINDOW_S = 2.0


@dataclass
class PodStats:
    pod_id: str
    availability: str = "-"  # retained pods/<id>/availability
    state: dict = field(default_factory=dict)  # retained pods/<id>/state
    samples: int = 0  # EEG samples received over MQTT
    batches: int = 0
    gaps: int = 0  # batches flagged "gap"
    recent: deque = field(default_factory=deque)  # (monotonic time, n) of recent batches
    sent: int = 0
    ok: int = 0
    failed: int = 0
    pending: dict = field(default_factory=dict)  # command id -> (monotonic time sent, scene summary)
    last_result: str = ""
    last_result_ok: bool | None = None

    # -- derived --------------------------------------------------------
    def eeg_rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        while self.recent and self.recent[0][0] < now - RATE_WINDOW_S:
            self.recent.popleft()
        return sum(n for _t, n in self.recent) / RATE_WINDOW_S

    @property
    def link(self) -> str:
        """``online`` from availability, else the state's link (connecting, refused, offline)."""
        if self.availability == "online":
            return "online"
        return self.state.get("link") or self.availability

    @property
    def host_counters(self) -> dict:
        return (self.state.get("counters") or {}).get("host") or {}

    @property
    def frames_rx(self) -> int:
        return int(self.host_counters.get("frames_rx", 0))

    @property
    def frames_bad(self) -> int:
        bad = self.host_counters.get("frames_bad", 0)
        return sum(bad.values()) if isinstance(bad, dict) else int(bad or 0)


def scene_summary(scene: dict) -> str:
    r, g, b = scene.get("color", (255, 255, 255))
    text = f"{scene['effect']} #{r:02x}{g:02x}{b:02x}"
    if scene["effect"] == "breathe":
        text += f" {scene.get('period_ms', 4000) / 1000:g}s"
    return text


def sample_leds(rgb: bytes | None, n: int = LED_SAMPLES) -> list[tuple[int, int, int]]:
    """Up to ``n`` LEDs spread evenly over a frame's RGB bytes."""
    if not rgb:
        return []
    count = len(rgb) // 3
    if count <= n:
        idx = range(count)
    else:
        idx = [round(i * (count - 1) / (n - 1)) for i in range(n)]
    return [tuple(rgb[3 * i : 3 * i + 3]) for i in idx]


def led_text(rgb: bytes | None, n: int = LED_SAMPLES) -> Text:
    leds = sample_leds(rgb, n)
    if not leds:
        return Text("(no frame yet)", style="dim")
    text = Text()
    for r, g, b in leds:
        if r == g == b == 0:
            text.append("·", style="grey35")
        else:
            text.append("█", style=f"rgb({r},{g},{b})")
    return text


def led_hex(rgb: bytes | None) -> str:
    """The brightest sampled LED as #rrggbb (for the plain-text lines)."""
    leds = sample_leds(rgb)
    if not leds:
        return "-------"
    r, g, b = max(leds, key=sum)
    return f"#{r:02x}{g:02x}{b:02x}"


_LINK_STYLE = {"online": "bold green", "connecting": "yellow", "refused": "bold red", "offline": "red"}


class DemoModel:
    def __init__(self, pod_ids: list[str]):
        self.pods: dict[str, PodStats] = {p: PodStats(p) for p in pod_ids}
        self.events: deque[str] = deque(maxlen=6)
        self.host_availability = "-"
        self.unparsable = 0
        self.clock = lambda: 0.0  # seconds of show, for event stamps (set by the demo)

    def event(self, text: str) -> None:
        self.events.append(f"{self.clock():5.1f} s  {text}")

    # -- input ----------------------------------------------------------
    def on_message(self, topic: str, payload: bytes, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if topic.startswith("hypnolum/v1/hosts/") and topic.endswith("/availability"):
            self.host_availability = payload.decode(errors="replace")
            return
        if not topic.startswith(PREFIX):
            return
        pod_id, _, leaf = topic[len(PREFIX) :].partition("/")
        pod = self.pods.get(pod_id)
        if pod is None:
            return
        try:
            if leaf == "availability":
                new = payload.decode(errors="replace")
                if new != pod.availability:
                    self.event(f"{pod_id} {new}")
                pod.availability = new
            elif leaf == "eeg":
                msg = json.loads(payload)
                n = int(msg.get("n", 0))
                pod.samples += n
                pod.batches += 1
                pod.recent.append((now, n))
                if msg.get("gap"):
                    pod.gaps += 1
            elif leaf == "state":
                pod.state = json.loads(payload)
            elif leaf == "set/result":
                self._on_result(pod, json.loads(payload))
        except (ValueError, TypeError, AttributeError):
            self.unparsable += 1

    def _on_result(self, pod: PodStats, result: dict) -> None:
        sent = pod.pending.pop(result.get("id"), None)
        if sent is None:
            return  # not one of ours
        latency_ms = (time.monotonic() - sent[0]) * 1000
        if result.get("ok"):
            pod.ok += 1
            pod.last_result = f"ok {sent[1]} ({result.get('ack', 'ok')}, {latency_ms:.0f} ms)"
            pod.last_result_ok = True
        else:
            pod.failed += 1
            why = result.get("nack") or result.get("error") or "failed"
            pod.last_result = f"FAILED {sent[1]}: {why}"
            pod.last_result_ok = False
            self.event(f"{pod.pod_id} command {result.get('id')} failed: {why}")

    def command_sent(self, pod_id: str, cmd_id: str, scene: dict) -> None:
        pod = self.pods[pod_id]
        pod.sent += 1
        pod.pending[cmd_id] = (time.monotonic(), scene_summary(scene))

    # -- queries --------------------------------------------------------
    def all_online(self) -> bool:
        return all(p.availability == "online" for p in self.pods.values())

    def pending(self) -> int:
        return sum(len(p.pending) for p in self.pods.values())

    # -- output ---------------------------------------------------------
    def table(self, leds: dict[str, bytes | None], width: int = 120) -> Table:
        """The pods' table for a terminal ``width`` columns wide: below ``WIDE`` the sample
        and frame counts are left out and the LED strip is shorter, so 80 columns hold the
        rest; the last command takes what is left, cut with an ellipsis."""
        now = time.monotonic()
        wide = width >= WIDE
        n_leds = LED_SAMPLES if wide else LED_SAMPLES_NARROW
        t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1), collapse_padding=True,
                  header_style="bold", expand=False)
        t.add_column("pod", no_wrap=True, overflow="ellipsis", max_width=16)
        t.add_column("link", no_wrap=True)
        t.add_column("LEDs", no_wrap=True, min_width=n_leds)
        t.add_column("EEG/s", justify="right", no_wrap=True)
        if wide:
            t.add_column("samples", justify="right", no_wrap=True)
        t.add_column("gaps", justify="right", no_wrap=True)
        if wide:
            t.add_column("frames rx/bad", justify="right", no_wrap=True)
        t.add_column("cmds ok/fail" if wide else "cmds", justify="right", no_wrap=True)
        # the one column that gives way: the table shrinks only wrappable columns, and the
        # cells (Text with no_wrap) are cut with an ellipsis instead of wrapping
        t.add_column("last command", min_width=12)
        for pod_id, p in self.pods.items():
            link = p.link
            rate = p.eeg_rate(now)
            cmds = Text(f"{p.ok}/{p.failed}", style="red" if p.failed else "")
            if p.pending:
                cmds.append(f" +{len(p.pending)}", style="dim")
            style = {True: "green", False: "bold red", None: "dim"}[p.last_result_ok]
            cells = [
                pod_id,
                Text(link, style=_LINK_STYLE.get(link, "dim")),
                led_text(leds.get(pod_id), n_leds),
                Text(f"{rate:.0f}", style="" if rate > 0 else "dim"),
            ]
            if wide:
                cells.append(str(p.samples))
            cells.append(Text(str(p.gaps), style="yellow" if p.gaps else ""))
            if wide:
                cells.append(Text(f"{p.frames_rx}/{p.frames_bad}", style="yellow" if p.frames_bad else ""))
            cells += [cmds, Text(p.last_result or "-", style=style, no_wrap=True, overflow="ellipsis")]
            t.add_row(*cells)
        return t

    def renderable(self, header: Text, leds: dict[str, bytes | None], footer: str = "") -> DemoView:
        """The live view; its table is laid out when it is drawn, for the terminal's width."""
        return DemoView(self, header, leds, footer)

    def lines(self, elapsed: float, leds: dict[str, bytes | None]) -> list[str]:
        now = time.monotonic()
        out = []
        for pod_id, p in self.pods.items():
            out.append(
                f"[{elapsed:5.1f}s] {pod_id} {p.link:<10} leds {led_hex(leds.get(pod_id))} "
                f"eeg {p.eeg_rate(now):4.0f}/s samples {p.samples} gaps {p.gaps} "
                f"frames {p.frames_rx}/{p.frames_bad} cmds {p.ok}/{p.failed} last: {p.last_result or '-'}"
            )
        return out


class DemoView:
    """Header, the pods' table (laid out for the width it is drawn at), recent events and a footer."""

    def __init__(self, model: DemoModel, header: Text, leds: dict[str, bytes | None], footer: str = ""):
        self.model, self.header, self.leds, self.footer = model, header, leds, footer

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        parts = [self.header, self.model.table(self.leds, options.max_width)]
        if self.model.events:
            parts.append(Text("\n".join(self.model.events), style="dim"))
        if self.footer:
            parts.append(Text(self.footer, style="dim"))
        yield Group(*parts)
