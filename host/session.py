"""One pod on one transport: handshake, heartbeat, commands, telemetry.

A ``PodSession`` runs until its transport ends. Meanwhile it keeps
``state`` (a ``PodState``) current and puts typed events (host/events.py) on
``events``: ``STATE_CHANGED`` whenever the state changed, an ``EegBatch`` per
EEG batch, ``Bands`` per band-power message and a ``LedPreview``
(host/leds.py) per LED preview; ``ENDED`` marks the end of the session. The
queue is bounded and drops the oldest event when full (counted), so a slow
consumer never stalls the link.

``state.scene`` is what the pod shows, as the pod reports it (SCENE_SHOWN:
when it changes and in answer to CONNECT, so also after a restart of hostd
and under a circle's timeline), with who chose it (``source``: set,
timeline, pod) and its safety state. Until a pod has reported in this
session, an acknowledged SCENE stands in for it. A refused command's answer
carries what the pod named: the field and the range it allows
(protocol/nack.py).

A frame whose handler raises is contained to that frame: counted in
``counters.host.frames_failed`` and in the hub's handler failures, logged, and
the link goes on.

Compatibility is per message (protocol/compat.py, docs/protocol.md): the pod's
HELLO names the layout of every message it knows (or its fingerprint a released
schema's). Only a core message that differs refuses the pod; any other is listed
in ``state.unsupported`` with its reason. A command whose message is unsupported
fails at once (``Unsupported``); other unsupported messages are not sent
(``counters.host.sends_unsupported``); the pod's frames of an unsupported message
are dropped undecoded (``counters.host.frames_unsupported``), each message
logged once.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

from ..protocol import codec, compat, nack
from ..protocol.ids import pod_id_problem
from ..protocol.values import Scene
from ..protocol.messages import (
    EEG_FLAG_GAP_BEFORE,
    EEG_FLAG_REPLAY,
    SHOWN_LINK_SAFE,
    SHOWN_NIGHT,
    SHOWN_STOPPED,
)
from . import state as st
from .clock import PodClock
from .config import PodsConfig
from .events import ENDED, STATE_CHANGED, Bands, EegBatch, Event
from .leds import LedPreview
from .supervisor import Failures
from .transport import Transport, TransportClosed

log = logging.getLogger(__name__)

_EVENT_QUEUE = 512
_REFUSED_RETRY_S = 2.0  # CONNECT period towards a refused pod (it may be reflashed)
_SYNC_PING_S = 0.05  # PING period until the clock estimate has _SYNC_EXCHANGES exchanges
_SYNC_EXCHANGES = 16


class CommandError(Exception):
    """A command could not be carried out (not online, no answer, bad fields)."""


class NotOnline(CommandError):
    pass


class CommandTimeout(CommandError):
    pass


class Unsupported(CommandError):
    """The pod lays the command's message out otherwise, or does not know it."""


class Claims(Protocol):
    """Who holds a pod id; the first session to claim it wins."""

    def claim(self, pod_id: str, session: "PodSession") -> "PodSession | None":
        """Claim ``pod_id``; returns the other holder if it is taken, else None."""

    def release(self, pod_id: str, session: "PodSession") -> None: ...


class LocalClaims:
    def __init__(self) -> None:
        self.holders: dict[str, PodSession] = {}

    def claim(self, pod_id, session):
        holder = self.holders.setdefault(pod_id, session)
        return None if holder is session else holder

    def release(self, pod_id, session):
        if self.holders.get(pod_id) is session:
            del self.holders[pod_id]


class PodSession:
    def __init__(self, transport: Transport, cfg: PodsConfig, host_id: str, claims: Claims | None = None,
                 failures: Failures | None = None):
        self.transport = transport
        self.failures = failures or Failures()
        self.cfg = cfg
        self.host_id = host_id
        self.claims = claims or LocalClaims()
        self.state = st.PodState(port=transport.name)
        self.events: asyncio.Queue[Event] = asyncio.Queue(_EVENT_QUEUE)
        self.claimed: str | None = None  # pod id this session holds
        self._decoder = codec.FrameDecoder(by_hello=True)
        self._layouts: dict[int, int] | None = None  # what the pod speaks, once its HELLO was judged
        self._logged_unsupported: set[str] = set()  # messages whose dropping or skipping was logged
        self._seq = 0
        self._send_lock = asyncio.Lock()
        self._hello: dict[str, Any] | None = None
        self._hello_evt = asyncio.Event()
        self._last_rx = time.monotonic()
        self._pending: dict[int, str] = {}  # seq -> command name, for its answer
        self._futures: dict[int, asyncio.Future] = {}
        self._scene_reported = False  # the pod has said what it shows (SCENE_SHOWN) in this session
        self._eeg_next: int | None = None
        self._online_before = False
        self._nonce = 0
        self.update_status: dict[str, Any] | None = None  # the pod's last UPDATE_STATUS (host/updates.py)
        self.update_evt = asyncio.Event()  # set at each UPDATE_STATUS
        self.clock = PodClock()  # the pod's ticks_us against the host's CLOCK_REALTIME (PING/PONG)
        # frame name -> bound handler (_on_<name>), looked up once instead of per frame
        self._handlers = {name[4:]: getattr(self, name) for name in dir(type(self)) if name.startswith("_on_")}
        self.state.clock = self.clock.state

    # -- events -----------------------------------------------------------
    def _emit(self, event: Event) -> None:
        if self.events.full():
            self.events.get_nowait()
            self.state.counters.events_dropped += 1
        self.events.put_nowait(event)

    def changed(self) -> None:
        self._emit(STATE_CHANGED)

    # -- sending ------------------------------------------------------------
    def _next_seq(self) -> int:
        seq, self._seq = self._seq, (self._seq + 1) & 0xFFFF
        return seq

    async def _write(self, frame: bytes) -> None:
        async with self._send_lock:
            # a leading delimiter closes whatever noise the pod's decoder holds,
            # so this frame is decoded even right after garbage on the line
            await self.transport.write(b"\x00" + frame)

    def supports(self, name: str) -> bool:
        """True unless the pod, taken with its HELLO, lays message ``name`` out otherwise or
        does not know it. Before that (and while it is refused) the host's own layouts go:
        CONNECT keeps asking a refused pod, which may be reflashed."""
        return self._layouts is None or name not in self.state.unsupported

    def _log_unsupported(self, name: str, what: str) -> None:
        if name not in self._logged_unsupported:
            self._logged_unsupported.add(name)
            log.warning("pod %s: %s %s (%s); logged once", self.state.pod_id, what, name,
                        self.state.unsupported.get(name, "layout differs"))

    async def send(self, name: str, fields: dict[str, Any]) -> int:
        """Send a message that is not answered; one the pod cannot take is not sent (counted,
        logged once) and -1 returned."""
        if not self.supports(name):
            self.state.counters.sends_unsupported += 1
            self._log_unsupported(name, "not sending")
            return -1
        seq = self._next_seq()
        await self._write(codec.encode(name, seq, fields, layouts=self._layouts))
        return seq

    # -- run ------------------------------------------------------------------
    async def run(self) -> None:
        """Serve the pod until the transport ends (or the task is cancelled)."""
        link = asyncio.create_task(self._link_loop(), name=f"link {self.transport.name}")
        reader = asyncio.create_task(self._read_loop(), name=f"read {self.transport.name}")
        try:
            done, _ = await asyncio.wait({link, reader}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                exc = task.exception()
                if exc is not None and not isinstance(exc, TransportClosed):
                    raise exc
        finally:
            for task in (link, reader):
                task.cancel()
            await asyncio.gather(link, reader, return_exceptions=True)
            for fut in self._futures.values():
                if not fut.done():
                    fut.set_exception(NotOnline(f"{self.transport.name}: session ended"))
            if self.claimed:
                self.claims.release(self.claimed, self)
            self.state.link, self.state.reason = st.OFFLINE, "port closed"
            log.info("%s: session ended (pod %s)", self.transport.name, self.state.pod_id or "unknown")
            self.changed()
            self._emit(ENDED)

    async def _read_loop(self) -> None:
        decoder = self._decoder
        while data := await self.transport.read():
            version_errors = decoder.errors.get("version", 0)
            bad_before = sum(decoder.errors.values())
            frames = decoder.feed(data)
            if decoder.errors:
                self.state.counters.frames_bad = dict(decoder.errors)
            if decoder.errors.get("version", 0) > version_errors and self.state.link != st.ONLINE:
                self._refuse(f"protocol version mismatch: {decoder.last_error}")
            elif (sum(decoder.errors.values()) > bad_before and decoder.last_failed == "hello"
                  and self.state.link != st.ONLINE):
                self._refuse(f"bad HELLO: {decoder.last_error}")
            if decoder.unsupported:
                self._count_dropped(decoder.unsupported)
            self.state.counters.frames_before_hello = decoder.before_hello
            if frames:
                self._last_rx = time.monotonic()
                self.state.counters.frames_rx += len(frames)
            handlers = self._handlers
            for frame in frames:
                handler = handlers.get(frame.name)
                if handler is not None:
                    try:
                        handler(frame)
                    except Exception as exc:  # noqa: BLE001  (one frame's failure is that frame's)
                        self.state.counters.frames_failed += 1
                        self.failures.contain("frame", f"{frame.name} from {self.transport.name}", exc)

    def _count_dropped(self, dropped: dict[str, int]) -> None:
        c = self.state.counters
        if dropped != c.frames_unsupported:
            c.frames_unsupported = dict(dropped)
            for name in dropped:
                self._log_unsupported(name, "dropping frames of")

    # -- link state machine -----------------------------------------------------
    async def _link_loop(self) -> None:
        while True:
            hello = await self._handshake()
            problem = self._check(hello)
            if problem:
                self._refuse(problem)
                await asyncio.sleep(_REFUSED_RETRY_S)
                continue
            self._go_online(hello)
            await self._stay_online()

    async def _handshake(self) -> dict[str, Any]:
        """Send CONNECT until a HELLO arrives (the pod may also volunteer one at boot)."""
        while True:
            self._hello_evt.clear()
            await self.send(
                "connect",
                {"protocol_version": codec.PROTOCOL_VERSION, "fingerprint": codec.FINGERPRINT, "host_id": self.host_id},
            )
            try:
                async with asyncio.timeout(self.cfg.connect_interval_s):
                    await self._hello_evt.wait()
            except TimeoutError:
                continue
            self._hello_evt.clear()
            return self._hello

    def _check(self, hello: dict[str, Any]) -> str:
        """Why this pod cannot go online, or "" if it can."""
        pod_id = hello["pod_id"]
        if problem := pod_id_problem(pod_id):  # it would name topics and files: never taken
            self.state.pod_id = None
            return problem
        if self.claimed and self.claimed != pod_id:  # reflashed with another id
            self.claims.release(self.claimed, self)
            self.claimed = None
        if not self.claimed:
            holder = self.claims.claim(pod_id, self)
            if holder is not None:
                return f"pod id {pod_id} is already connected on {holder.transport.name}"
            self.claimed = pod_id
        if hello["protocol_version"] != codec.PROTOCOL_VERSION:
            return f"protocol version {hello['protocol_version']} differs from host {codec.PROTOCOL_VERSION}"
        verdict = compat.judge(hello)
        self.state.unsupported = verdict.unsupported
        if verdict.refusal:
            self._layouts = None
            return verdict.refusal
        if verdict.layouts != self._layouts:
            self._logged_unsupported.clear()  # another firmware: say again what it lacks
        self._layouts = verdict.layouts
        return ""

    def _refuse(self, reason: str) -> None:
        s = self.state
        if s.link == st.REFUSED and s.reason == reason:
            return  # already said so; the pod is asked again quietly
        s.link, s.reason = st.REFUSED, reason
        log.warning("pod %s refused: %s (port %s)", s.pod_id or "?", reason, self.transport.name)
        self.changed()

    def _go_online(self, hello: dict[str, Any]) -> None:
        s = self.state
        if self._online_before:
            s.counters.reconnects += 1
        self._online_before = True
        s.link, s.reason = st.ONLINE, ""
        self._eeg_next = None
        self.clock.reset()  # a new session: the pod may have rebooted, its clock restarted
        log.info(
            "pod %s online on %s (firmware %s, boot %08x, %d LEDs, %d EEG channels at %d Hz)",
            s.pod_id, self.transport.name, s.firmware, s.boot_id, s.led_count, s.eeg_channels, s.sample_rate_hz,
        )
        if s.unsupported:
            log.warning("pod %s: messages this host cannot use with it: %s", s.pod_id,
                        "; ".join(f"{name}: {why}" for name, why in s.unsupported.items()))
        self.changed()

    async def _stay_online(self) -> None:
        """Ping until the link is lost or the pod reboots; then return to re-handshake."""
        s = self.state
        boot_id = s.boot_id
        while True:
            self._nonce = (self._nonce + 1) & 0xFFFFFFFF
            ping = self.supports("ping")  # a pod without it has no clock estimate; STATUS keeps the link
            if ping:
                await self.send("ping", {"nonce": self._nonce, "host_time_us": time.time_ns() // 1000})
            # ping fast until the clock estimate stands on enough exchanges
            fast = ping and len(self.clock.window) < _SYNC_EXCHANGES
            try:
                async with asyncio.timeout(_SYNC_PING_S if fast else self.cfg.ping_interval_s):
                    await self._hello_evt.wait()
            except TimeoutError:
                pass
            else:
                self._hello_evt.clear()
                if self._hello["boot_id"] != boot_id:
                    s.counters.reboots += 1
                    log.warning("pod %s on %s rebooted (boot %08x); handshaking again", s.pod_id, self.transport.name, s.boot_id)
                    s.link, s.reason = st.CONNECTING, "pod rebooted"
                    s.scene = None  # a rebooted pod no longer shows what it acknowledged
                    self._scene_reported = False
                    self.changed()
                    return
            silent_s = time.monotonic() - self._last_rx
            if silent_s > self.cfg.heartbeat_timeout_s:
                log.warning("pod %s on %s: link lost (nothing received for %.1f s)", s.pod_id, self.transport.name, silent_s)
                s.link, s.reason = st.CONNECTING, "heartbeat timeout"
                self.changed()
                return

    # -- commands -------------------------------------------------------------
    async def command(self, name: str, fields: dict[str, Any]) -> tuple[str, str | None]:
        """Send a command; returns ("ack", None) or ("nack", reason). The reason is a
        ``nack.Refusal``: equal to the reason's name, with the field the pod named and the
        range it allows (``.field``, ``.allowed``, ``.detail()``).

        Re-sent with the same seq (so the pod can de-duplicate) every
        ``command_timeout_s``, ``command_retries`` times after the first try;
        then ``CommandTimeout``. ``NotOnline`` if the pod is not online;
        ``Unsupported`` at once if the pod cannot take ``name`` (state.unsupported);
        ``codec.ProtocolError`` if the fields do not encode.
        """
        c = self.state.counters
        if self.state.link != st.ONLINE:
            raise NotOnline(f"pod {self.state.pod_id or self.transport.name} is not online (link {self.state.link})")
        if not self.supports(name):
            raise Unsupported(f"pod {self.state.pod_id}: {name} is unsupported: {self.state.unsupported[name]}")
        seq = self._next_seq()
        frame = codec.encode(name, seq, fields, layouts=self._layouts)
        fut = asyncio.get_running_loop().create_future()
        self._pending[seq] = name
        self._futures[seq] = fut
        attempts = 1 + self.cfg.command_retries
        try:
            for attempt in range(attempts):
                try:
                    await self._write(frame)
                except TransportClosed as exc:  # unplugged while the command was going out
                    raise NotOnline(f"pod {self.state.pod_id or self.transport.name}: link closed ({exc})") from None
                c.commands_sent += 1
                if attempt:
                    c.commands_retried += 1
                try:
                    async with asyncio.timeout(self.cfg.command_timeout_s):
                        answer = await asyncio.shield(fut)
                except TimeoutError:
                    continue
                if answer[0] == "ack" and name == "scene" and not self._scene_reported:
                    # until the pod reports what it shows
                    self.state.scene = dict(fields, source="set", stopped=False, link_safe=False, night=False)
                    self.changed()
                return answer
            c.commands_failed += 1
            self.changed()
            raise CommandTimeout(f"{name}: no answer after {attempts} attempts") from None
        finally:
            self._pending.pop(seq, None)
            self._futures.pop(seq, None)

    # -- frames from the pod ------------------------------------------------
    def _on_hello(self, frame: codec.Frame) -> None:
        f = frame.fields
        s = self.state
        s.pod_id, s.firmware, s.protocol = f["pod_id"], f["fw_version"], f["protocol_version"]
        s.fingerprint, s.boot_id, s.build_hash = f["fingerprint"], f["boot_id"], f["build_hash"]
        s.led_count, s.eeg_channels, s.sample_rate_hz = f["led_count"], f["eeg_channels"], f["sample_rate_hz"]
        self._hello = f
        self._hello_evt.set()

    def _on_status(self, frame: codec.Frame) -> None:
        self.state.pod_status = dict(frame.fields)
        self.changed()

    def _on_update_status(self, frame: codec.Frame) -> None:
        f = dict(frame.fields)
        f["state"], f["reason"] = str(f["state"]), str(f["reason"])
        self.update_status = f
        self.update_evt.set()

    def _on_power(self, frame: codec.Frame) -> None:
        self.state.power = dict(frame.fields)  # the LED current limit and why (docs/light.md)
        self.changed()

    def _on_pong(self, frame: codec.Frame) -> None:
        # the instant the bytes arrived, not after the decode and the frames before it
        now_us = (self.transport.rx_ns or time.time_ns()) // 1000
        f = frame.fields
        sent_us = f["host_time_us"]
        self.state.counters.rtt_ms = round((now_us - sent_us) / 1000, 3)
        was_synced = self.clock.synced
        self.clock.add(sent_us, f["pod_rx_us"], f["pod_tx_us"], now_us)
        if self.clock.synced and not was_synced:
            self.changed()  # the state JSON now shows offset, drift, uncertainty

    def _answer(self, seq: int, answer: tuple[str, str | None]) -> None:
        fut = self._futures.get(seq)
        if fut is not None and not fut.done():
            fut.set_result(answer)

    def _on_ack(self, frame: codec.Frame) -> None:
        self._answer(frame.fields["ack_seq"], ("ack", None))

    def _on_nack(self, frame: codec.Frame) -> None:
        f = frame.fields
        name = self._pending.get(f["ack_seq"])
        described = None
        if name is not None:
            try:
                described = nack.describe(name, f)
            except nack.BadDetail as exc:  # the reason still stands; the detail is dropped, counted
                self.state.counters.frames_failed += 1
                self.failures.contain("frame", f"nack from {self.transport.name}", exc)
        self._answer(f["ack_seq"], ("nack", nack.Refusal(str(f["reason"]), described)))

    def _on_scene_shown(self, frame: codec.Frame) -> None:
        f = frame.fields
        state = f["state"]
        scene = Scene.from_fields(f).fields()
        scene["source"] = str(f["source"])
        scene["stopped"] = bool(state & SHOWN_STOPPED)  # a participant's stop: the safe glow, held
        scene["link_safe"] = bool(state & SHOWN_LINK_SAFE)  # the pod's fade to safe after link silence
        scene["night"] = bool(state & SHOWN_NIGHT)  # night limits hold
        self.state.scene = scene
        self._scene_reported = True
        self.changed()

    def _on_leds(self, frame: codec.Frame) -> None:
        if self.state.link == st.ONLINE:
            f = frame.fields
            self._emit(LedPreview(led_count=f["led_count"], segments=f["segments"], rgb=f["rgb"], t_host=time.time()))

    def _on_log(self, frame: codec.Frame) -> None:
        level = {"debug": 10, "info": 20, "warning": 30, "error": 40}.get(str(frame.fields["level"]), 20)
        log.log(level, "pod %s says: %s", self.state.pod_id, frame.fields["text"])

    def _on_eeg_batch(self, frame: codec.Frame) -> None:
        if self.state.link != st.ONLINE:
            return
        f, c = frame.fields, self.state.counters
        n = len(f["samples"]) // (3 * f["channels"])
        first = f["first_seq"]
        replay = bool(f["flags"] & EEG_FLAG_REPLAY)
        gap = bool(f["flags"] & EEG_FLAG_GAP_BEFORE)
        if not replay:  # replayed batches fill old holes; only live ones tell the sequence
            if self._eeg_next is not None and first != self._eeg_next:
                c.eeg_seq_gaps += 1
                gap = True
            self._eeg_next = (first + n) & 0xFFFFFFFF
        c.eeg_batches += 1
        c.eeg_samples += n
        self._emit(EegBatch(seq=first, n=n, channels=f["channels"], rate_hz=self.state.sample_rate_hz,
                            t_pod_ms=f["ticks_ms"], t_host=time.time(), gap=gap, replay=replay,
                            pod_gap=bool(f["flags"] & EEG_FLAG_GAP_BEFORE),
                            samples=f["samples"]))  # n x channels x 24-bit big-endian counts, as on the wire

    def _on_eeg_bands(self, frame: codec.Frame) -> None:
        if self.state.link == st.ONLINE:
            self._emit(Bands(frame.fields))
