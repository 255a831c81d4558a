"""Circles: named groups of pods that share one timeline and one group value,
coordinated through MQTT only (docs/circles.md).

Retained, per circle ``<c>``:

* ``hypnolum/v1/circles/<c>/definition`` ``{"pods": [...], "group_id": 1, "drive": "plv", ...}``
* ``hypnolum/v1/circles/<c>/timeline`` (host/timeline.py)

Every hostd runs one :class:`CircleCoordinator`. It reads those topics and,
for the circle pods it serves itself (and only those: several hostd on one
broker each handle their own), keeps each pod on the frame grid (FRAME_PHASE
about twice a second, from that pod's clock estimate), gives it every scene of
the timeline ahead of time as SCENE_AT, and again to a pod that reconnects or
reboots (its current scene with the phase it would have had). It also reads
the raw EEG of all the circle's pods, wherever they are attached, computes the
group features (host/group_eeg.py) and sends the group value to its pods; it
publishes each value it sends, with the features it came from, on
``hypnolum/v1/circles/<c>/group/<host_id>``.

When the value is sent: with drive "alpha", as soon as new EEG of a circle pod
has moved the tracked alpha power, but at most every ``MIN_GAP_S`` per circle
(the first new batch after a quiet spell is sent at once; later ones wait for
the gap to pass and then the newest value goes); with drive "plv", when the
windowed PLV is computed, ``rate_hz`` times a second. Either way at least
``rate_hz`` times a second, even when the value has not changed. Each pod gets
the value from its own writer task, so a slow link delays no other pod, and
a pod that is still being written to gets only the newest value next.

There is no election and no
home-made consensus: every host reads the same retained topics and the same
EEG, and the instants are wall-clock ones.

The coordinator's connection (client id ``<client id>-circles``) is kept up by
the hub's broker, with the same reconnect policy as hostd's other connections
(host/broker.py). A message whose handling fails (a bug; a payload that cannot
be used is counted in ``bad_payloads`` and skipped) is counted in the hub's
handler failures and logged, and the next message is read.
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Annotated, Any, Literal

import aiomqtt
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from ..protocol.ids import pod_id_problem
from . import state as st
from . import topics
from .broker import read_until
from .group_eeg import EegPayloadError, PodSignal, group_features, group_value, phase_locking
from .inbound import InboundError
from .timeline import Scheduled, Timeline, TimelineError, frame_phase_fields, scene_at_fields

log = logging.getLogger(__name__)

CIRCLES = f"{topics.PREFIX}/circles"
_TICK_S = 0.01  # how often pods are checked for something to send (and the rate_hz group updates)
_PHASE_EVERY_NS = 500 * 10**6
MIN_GAP_S = 0.01  # drive "alpha": at most 100 group values a second per circle ...
JUMP = 1024  # ... unless the value moved by this much (1/64 of full scale) since the last one sent,
JUMP_GAP_S = 0.004  # which goes at once, if at least this long after the last


def circle_topic(circle: str, leaf: str) -> str:
    return f"{CIRCLES}/{circle}/{leaf}"


def _pod_id(value: str) -> str:
    if problem := pod_id_problem(value):
        raise ValueError(problem)
    return value


class CircleDef(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    # each id is subscribed to (pods/<id>/eeg): the pod id grammar keeps wildcards out
    pods: list[Annotated[str, AfterValidator(_pod_id)]] = Field(min_length=1)
    group_id: int = Field(0, ge=0, le=65535)
    drive: Literal["plv", "alpha"] = "plv"
    rate_hz: float = Field(10.0, ge=4.0, le=50.0)  # group value updates per second
    window_s: float = Field(1.0, ge=0.25, le=4.0)
    alpha_full_uv2: float = Field(100.0, gt=0)
    # low-pass time constant of the per-sample alpha tracker: 1/(2 pi tau) is the half-width of the
    # band around 10 Hz (0.08 s: 8-12 Hz at -3 dB); longer is steadier and slower
    alpha_tau_s: float = Field(0.08, ge=0.04, le=1.0)
    lead_ms: int = Field(500, ge=0)  # how far ahead a start must be published


class Circle:
    def __init__(self, name: str) -> None:
        self.name = name
        self.definition: CircleDef | None = None
        self.timeline: Timeline | None = None
        self.signals: dict[str, PodSignal] = {}
        self.features = None
        self.value: int | None = None
        self.updates = 0
        self.plv: float | None = None  # the windowed PLV, computed rate_hz times a second
        self.plv_at = -math.inf  # time.monotonic() of that computation
        self.sent_at = -math.inf  # ... and of the last group value sent
        self.pending: asyncio.TimerHandle | None = None  # a throttled send waiting for MIN_GAP_S

    def define(self, definition: CircleDef | None) -> None:
        old, self.definition = self.definition, definition
        if definition is None or old is None or old.alpha_tau_s != definition.alpha_tau_s:
            self.signals.clear()
        else:
            for pod_id in [p for p in self.signals if p not in definition.pods]:
                del self.signals[pod_id]


def _reason(exc: Exception) -> str:
    """One line saying what was wrong with a payload (the first problem, with where it is)."""
    if isinstance(exc, InboundError):
        return exc.reason
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "payload"
        return f"{where}: {err['msg']}" + (f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else "")
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


class CircleCoordinator:
    def __init__(self, config, hub) -> None:
        self.config = config
        self.hub = hub
        self.host_id = config.host.id
        self.circles: dict[str, Circle] = {}
        self.scheduled: dict[int, Scheduled] = {}  # id(session) -> what that pod was given
        self.bad_payloads = 0
        self.late_events = 0  # events that reached a pod after their instant (it caught up)
        self.group_values_sent = 0
        self._inflight: set[tuple[int, int]] = set()
        self._value_next: dict[int, tuple[object, dict]] = {}  # id(session) -> (session, newest fields to write)
        self._tasks: set[asyncio.Task] = set()
        self._defined = asyncio.Event()  # set while some circle has a definition: the drive loop ticks

    # -- MQTT ------------------------------------------------------------------
    async def run(self) -> None:
        """Until cancelled: read the circles' topics (the connection kept up by the hub's
        broker), and drive the local pods."""
        bridge = self.hub.bridge
        async with asyncio.TaskGroup() as group:
            group.create_task(self._drive(), name="circles drive")
            await bridge.broker.keep("circles", f"{bridge.client_id}-circles", self._serve, asyncio.Event())

    async def _serve(self, client: aiomqtt.Client) -> None:
        await client.subscribe(f"{CIRCLES}/+/definition", qos=1)
        await client.subscribe(f"{CIRCLES}/+/timeline", qos=1)
        eeg_pods: set[str] = set()  # pods whose raw EEG this connection receives

        async def handle(msg: aiomqtt.Message) -> None:
            topic = msg.topic.value
            self.take(topic, bytes(msg.payload or b""))
            if topic.endswith("/definition"):  # only a definition changes the pods followed
                await self._follow_eeg(client, eeg_pods)

        await read_until(client, None, handle)

    def take(self, topic: str, payload: bytes) -> None:
        """``on_message``, with a failure contained to this message."""
        try:
            self.on_message(topic, payload)
        except Exception as exc:  # noqa: BLE001  (a failed handler costs this message only)
            self.hub.failures.contain("circles", topic, exc)
            self.hub.host_state.changed()

    async def _follow_eeg(self, client: aiomqtt.Client, subscribed: set[str]) -> None:
        """Receive the raw EEG of the circles' pods only: every pod's EEG on the broker would
        cost this host a decode per message even with no circle defined."""
        wanted = {p for c in self.circles.values() if c.definition is not None for p in c.definition.pods}
        for pod_id in sorted(wanted - subscribed):
            await client.subscribe(topics.pod(pod_id, "eeg"), qos=0)
            subscribed.add(pod_id)
        for pod_id in sorted(subscribed - wanted):
            await client.unsubscribe(topics.pod(pod_id, "eeg"))
            subscribed.discard(pod_id)

    def on_message(self, topic: str, payload: bytes) -> None:
        """Take one circle definition, timeline or pod EEG batch; a payload that cannot be
        used (refused by the bounded decoder, or invalid) is counted, logged and skipped:
        what the circle had before stays in force."""
        parts = topic.split("/")
        try:
            if len(parts) == 5 and parts[2] == "circles" and parts[4] in ("definition", "timeline"):
                value = self._decode(topic, payload) if payload else None
                circle = self.circles.get(parts[3]) or Circle(parts[3])
                if parts[4] == "definition":
                    circle.define(None if value is None else CircleDef.model_validate(value))
                else:
                    circle.timeline = None if value is None else Timeline.model_validate(value)
                self.circles.setdefault(parts[3], circle)
                self._note_defined()
            elif len(parts) == 5 and parts[2] == "pods" and parts[4] == "eeg":
                batch = None
                for circle in self.circles.values():
                    d = circle.definition
                    if d is not None and parts[3] in d.pods:
                        batch = self._decode(topic, payload) if batch is None else batch
                        if not isinstance(batch, dict):
                            raise EegPayloadError("eeg batch: a JSON object is expected")
                        circle.signals.setdefault(parts[3], PodSignal(d.alpha_tau_s)).add(batch)
                        if d.drive == "alpha":
                            self._new_alpha(circle)
        except (ValueError, ValidationError, TimelineError, EegPayloadError) as exc:
            self.bad_payloads += 1
            log.warning("circles: %s ignored: %s", topic, _reason(exc))

    def _decode(self, topic: str, payload: bytes) -> Any:
        return self.hub.inbound.decode(topic, payload)

    # -- the local pods ------------------------------------------------------------
    def _local(self, circle: Circle):
        """Sessions of this host serving pods of ``circle``, online and clock-synced."""
        for pod_id in circle.definition.pods:
            session = self.hub.pods.get(pod_id)
            if session is not None and session.state.link == st.ONLINE and session.clock.synced:
                yield session

    def _note_defined(self) -> None:
        if any(c.definition is not None for c in self.circles.values()):
            self._defined.set()
        else:
            self._defined.clear()

    async def _drive(self) -> None:
        while True:
            if not self._defined.is_set():  # no circle: nothing to tick for, no wake-up every _TICK_S
                self.scheduled.clear()
                await self._defined.wait()
            now = time.time_ns()
            for circle in list(self.circles.values()):
                if circle.definition is None:
                    continue
                if circle.timeline is not None:
                    due = circle.timeline.due(now)  # the same for every pod of the circle
                    for session in self._local(circle):
                        self._schedule(circle, session, now, due)
                self._group_tick(circle)
            live = {id(s) for s in self.hub.pods.values()}
            for key in [k for k in self.scheduled if k not in live]:
                del self.scheduled[key]
            await asyncio.sleep(_TICK_S)

    def _schedule(self, circle: Circle, session, now_ns: int, due: list) -> None:
        tl = circle.timeline
        boot = session.state.boot_id
        sch = self.scheduled.get(id(session))
        if sch is None or sch.boot_id != boot:  # a new session, or the pod rebooted
            sch = self.scheduled[id(session)] = Scheduled(boot, set())
        if now_ns - sch.phase_sent_ns >= _PHASE_EVERY_NS:
            sch.phase_sent_ns = now_ns
            asyncio.create_task(session.send("frame_phase", frame_phase_fields(session.clock, tl, now_ns)))
        for event in due:
            key = (id(session), event.at_ns)
            if event.at_ns in sch.delivered or key in self._inflight:
                continue
            self._inflight.add(key)
            asyncio.create_task(self._deliver(session, sch, event, key))

    async def _deliver(self, session, sch: Scheduled, event, key) -> None:
        try:
            now = time.time_ns()
            if event.at_ns < now:
                self.late_events += 1
            answer, reason = await session.command("scene_at", scene_at_fields(session.clock, event, now))
            if answer == "ack":
                sch.delivered.add(event.at_ns)
            else:
                log.warning("pod %s refused scene_at: %s", session.state.pod_id, reason)
                sch.delivered.add(event.at_ns)  # a refusal is final; do not repeat it
        except Exception as exc:  # noqa: BLE001  (a lost pod is retried when it is back)
            log.info("scene_at for pod %s not delivered: %r", session.state.pod_id, exc)
        finally:
            self._inflight.discard(key)

    # -- the group value ------------------------------------------------------------
    def _group_tick(self, circle: Circle) -> None:
        """The windowed PLV at rate_hz (then the value, with drive "plv"); with drive "alpha",
        the value if none went for 1/rate_hz."""
        d = circle.definition
        now, period = time.monotonic(), 1 / d.rate_hz
        if now - circle.plv_at >= period:
            circle.plv_at = now
            circle.plv = phase_locking({k: v for k, v in circle.signals.items() if k in d.pods}, d.window_s)
            if d.drive == "plv":
                self._send_group(circle)
        if d.drive == "alpha" and now - circle.sent_at >= period:
            self._send_group(circle)

    def _new_alpha(self, circle: Circle) -> None:
        """New EEG moved a pod's tracked alpha: send now, or once MIN_GAP_S after the last
        send; a large move (JUMP) goes at once: the onset of alpha must not wait."""
        since = time.monotonic() - circle.sent_at
        if since >= MIN_GAP_S:
            self._send_group(circle)
            return
        if since >= JUMP_GAP_S and circle.value is not None:
            d = circle.definition
            f = group_features({k: v for k, v in circle.signals.items() if k in d.pods}, circle.plv)
            if f is not None and abs(group_value(f, d.drive, d.alpha_full_uv2) - circle.value) >= JUMP:
                self._send_group(circle, f)
                return
        if circle.pending is None:  # otherwise a send is due already; it takes the newest value
            circle.pending = asyncio.get_running_loop().call_later(MIN_GAP_S - since, self._send_due, circle)

    def _send_due(self, circle: Circle) -> None:
        circle.pending = None
        if circle.definition is not None and self.circles.get(circle.name) is circle:
            self._send_group(circle)

    def _send_group(self, circle: Circle, f=None) -> None:
        """Send (and publish) the group value from features f, computed now if not given."""
        d = circle.definition
        if circle.pending is not None:
            circle.pending.cancel()
            circle.pending = None
        if f is None:
            f = group_features({k: v for k, v in circle.signals.items() if k in d.pods}, circle.plv)
        if f is None:
            return
        circle.sent_at = time.monotonic()
        circle.features = f
        circle.value = value = group_value(f, d.drive, d.alpha_full_uv2)
        circle.updates += 1
        fields = {"group_id": d.group_id, "value": value}
        for pod_id in d.pods:
            session = self.hub.pods.get(pod_id)
            if session is not None and session.state.link == st.ONLINE:
                self._send_value(session, fields)
        self.hub.bridge.publish_nowait(circle_topic(circle.name, f"group/{self.host_id}"),
                                       {**f.to_json(), "value": value, "host_id": self.host_id})

    def _send_value(self, session, fields: dict) -> None:
        """GROUP_VALUE to one pod without waiting: its writer task sends the newest fields next."""
        key = id(session)
        writing = key in self._value_next
        self._value_next[key] = (session, fields)
        if not writing:
            task = asyncio.create_task(self._write_values(key), name="group value")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _write_values(self, key: int) -> None:
        try:
            while True:
                session, fields = self._value_next[key]
                try:
                    await session.send("group_value", fields)
                    self.group_values_sent += 1
                except Exception as exc:  # noqa: BLE001  (the session notices a dead port itself)
                    log.debug("group_value to %s: %r", session.state.pod_id, exc)
                if self._value_next[key][1] is fields:
                    break
        finally:
            del self._value_next[key]
