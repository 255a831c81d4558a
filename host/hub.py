"""The hub: ties port sessions to the MQTT bridge.

It owns the pod-id registry (one session per pod id), pumps each session's
events to MQTT (state, EEG, band powers, the live LED colours), and carries
out set commands and the other pod inputs (markers, participant codes)
arriving from MQTT.

Set commands are carried out by host/setcommands.py; markers and participant
codes are answered here as they are read. A handler that fails on one message
costs only that message: it gets an error result, the failure is counted in
the host state and logged (host/supervisor.py).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any, Awaitable, Callable

from ..protocol.ids import pod_id_problem
from . import commands, discovery, topics
from . import state as st
from .config import Config
from .events import Bands, EegBatch, Ended, Event
from .inbound import Inbound, InboundError, Limits, pod_input_problem
from .leds import LedPreview, LedsPublisher
from .links import Boundaries
from .mqtt import Incoming, MqttBridge, PodInput
from .session import PodSession
from .setcommands import SetCommands, result_topic
from .state_publish import HostStatePublisher, StatePublisher
from .streams import EegStreams
from .supervisor import Failures
from .transport import Transport, TransportError, create
from .updates import Updates

log = logging.getLogger(__name__)

_OPEN_FAILED_FORGET_S = 30.0  # a port whose open failed and was not tried again since: gone


class Hub:
    def __init__(self, config: Config, bridge: MqttBridge):
        self.config = config
        self.bridge = bridge
        self.pods: dict[str, PodSession] = {}  # pod id -> the session holding it
        self.refused: dict[str, str] = {}  # port -> why its pod is not served (host state "refused_links")
        self._open_failed: dict[str, float] = {}  # port -> when opening it last failed (monotonic s)
        self.bad_commands = 0
        self.eeg = EegStreams(config, bridge)  # per-pod EEG streams: order, replay, recorder, LSL, MQTT
        self.leds = LedsPublisher(self.eeg.telemetry.put)  # pods/<id>/leds: at most 5 a second, QoS 0
        self.states = StatePublisher(bridge)  # pods/<id>/state: coalesced, latest wins
        self.inbound = Inbound(Limits.of(config.mqtt))  # bounded decoding of every MQTT payload read
        self.failures = Failures()  # message handlers that raised, by handler
        self.restarts: Counter[str] = Counter()  # subsystem -> restarts (hostd's supervisor counts here)
        self.host_state = HostStatePublisher(bridge, config.host.id, self._host_json)
        self.set_commands = SetCommands(self)  # set commands: intake, back-pressure, execution
        self.updates = Updates(self)  # firmware bundles from MQTT, sent over the link (host/updates.py)
        self.held: set[str] = set()  # ports hostd keeps off while something else uses them (a pod's REPL)
        self._serving: dict[str, Transport] = {}  # port name -> the open transport of its session
        bridge.handler = self

    # -- Claims (see session.Claims) -------------------------------------------
    def claim(self, pod_id: str, session: PodSession) -> PodSession | None:
        holder = self.pods.setdefault(pod_id, session)
        if holder is session:
            self.host_state.changed(at_once=True)
        return None if holder is session else holder

    def release(self, pod_id: str, session: PodSession) -> None:
        if self.pods.get(pod_id) is session:
            del self.pods[pod_id]
            self.host_state.changed(at_once=True)

    # -- ports ----------------------------------------------------------------
    async def serve_port(self, path: str) -> None:
        """Run one session on ``path`` until the port goes away; a held port only once it is let go."""
        while path in self.held:
            await asyncio.sleep(self.config.serial.scan_interval_s)
        await self.serve(create("serial", path, self.config.serial.baudrate))

    async def hold(self, paths: set[str]) -> None:
        """Keep hostd off these ports until :meth:`let_go`: a session on one ends (its transport is
        closed), and the scanner opens none of them again meanwhile."""
        self.held |= paths
        for path in paths:
            transport = self._serving.get(path)
            if transport is not None:
                await transport.close()

    def let_go(self, paths: set[str]) -> None:
        self.held -= paths

    def transports(self, boundaries: Boundaries | None = None) -> dict[str, Callable[[], Awaitable[None]]]:
        """The subsystems serving the BLE and USB pods named in the config, by name (serial
        has the port scanner): each a function that runs one until it ends. ``boundaries``:
        host/links.py ``Boundaries`` (None: BlueZ and libusb)."""
        from .links import ble_and_usb  # imports bleak / pyusb only when configured

        return ble_and_usb(self.config, self.serve, boundaries or Boundaries())

    async def serve(self, transport) -> None:
        """Run one pod session on an unopened transport until the link ends."""
        path = transport.name
        try:
            await transport.open()
        except TransportError as exc:
            self._open_failed[path] = time.monotonic()  # scanners try again while the device is there
            if self._note_refused(path, str(exc)):
                log.warning("%s", exc)
            else:  # the same again at the next scan: said once
                log.debug("%s", exc)
            return
        self._note_refused(path, None)
        log.info("port %s opened", path)
        self._serving[path] = transport
        session = PodSession(transport, self.config.pods, self.config.host.id, claims=self, failures=self.failures)
        pump = asyncio.create_task(self._pump(session), name=f"pump {path}")
        try:
            await session.run()
        finally:
            # also on shutdown: let the pump publish the final "offline" state
            try:
                async with asyncio.timeout(3.0):
                    await pump
            except Exception as exc:  # noqa: BLE001  (a stuck broker must not stop the port closing)
                log.debug("pump %s: %r", path, exc)
                if session.claimed:  # the pump fell behind: the final state must still be said
                    await self.bridge.publish(topics.pod(session.claimed, "state"), session.state.to_json(),
                                              qos=1, retain=True)
            if self._serving.get(path) is transport:
                del self._serving[path]
            await transport.close()

    async def _pump(self, session: PodSession) -> None:
        available: list[str] = []  # the pod id we made "online" on MQTT, if any
        port = session.transport.name
        try:
            while not isinstance(event := await session.events.get(), Ended):
                pod_id = session.claimed
                if pod_id is None:  # not yet identified, or refused as a duplicate: nothing to publish
                    if session.state.link == st.REFUSED:  # said in the host's state instead
                        self._note_refused(port, session.state.reason)
                    continue
                self._note_refused(port, None)
                try:
                    await self._on_event(session, pod_id, event, available)
                except Exception as exc:  # noqa: BLE001  (one event's failure is that event's)
                    self.failures.contain("event", f"{type(event).__name__} of pod {pod_id}", exc)
                    self.host_state.changed()
            if session.claimed:
                await self.states.final(session.claimed)  # "offline": on the broker before the port closes
        finally:
            self._note_refused(port, None)
            if available:
                self.bridge.pod_available(available[0], False)

    def _refused_links(self) -> dict[str, str]:
        """refused, less ports that failed to open and were not tried again for a while (gone)."""
        now = time.monotonic()
        for port, at in list(self._open_failed.items()):
            if now - at > _OPEN_FAILED_FORGET_S:
                del self._open_failed[port]
                self.refused.pop(port, None)
        return dict(sorted(self.refused.items()))

    def _note_refused(self, port: str, reason: str | None) -> bool:
        """Record why the pod on ``port`` is not served (None: it is, or the port is gone);
        True if that changed."""
        if self.refused.get(port) == reason:
            return False
        if reason is None:
            self._open_failed.pop(port, None)
            del self.refused[port]
        else:
            self.refused[port] = reason
        self.host_state.changed(at_once=True)
        return True

    async def _on_event(self, session: PodSession, pod_id: str, event: Event, available: list[str]) -> None:
        if isinstance(event, EegBatch):
            self.eeg.eeg(pod_id, event.fields())
            return
        if isinstance(event, Bands):
            self.eeg.bands(pod_id, event.fields)
            return
        if isinstance(event, LedPreview):
            self.leds.publish(pod_id, event)
            return
        online = session.state.link == st.ONLINE
        if available and (not online or available[0] != pod_id):
            self.bridge.pod_available(available.pop(), False)
        if online and not available:
            self.bridge.pod_available(pod_id, True)
            available.append(pod_id)
            await self._discover(pod_id, session)
            self.eeg.online(session)  # (re)attach the pod's EEG stream to this session
        self.states.changed(pod_id, lambda: self._state_json(pod_id, session), session.state.link,
                            session.state.reason)

    def _state_json(self, pod_id: str, session: PodSession) -> dict:
        session.state.eeg = self.eeg.state_of(pod_id)
        return session.state.to_json()

    async def _discover(self, pod_id: str, session: PodSession) -> None:
        """Home Assistant discovery configs for the pod (retained; re-sent after a broker restart)."""
        cfg = self.config.mqtt
        if not cfg.discovery:
            return
        for topic, payload in discovery.configs(cfg.discovery_prefix, self.config.host.id, pod_id, session.state.to_json()):
            await self.bridge.publish(topic, payload, qos=1, retain=True)

    # -- commands and pod inputs ---------------------------------------------------
    async def serve_commands(self) -> None:
        """The commands subsystem: carry out the set commands the bridge hands over
        (``command``) until cancelled.

        Cancelling it is hostd stopping: the commands still in flight or queued are
        answered "hostd stopped", and the pods' EEG streams are closed on the way out, so
        every recording ends with its last samples and annotations. (When it fails instead,
        hostd's supervisor starts it again and the streams go on.)"""
        self.host_state.changed()
        try:
            await self.set_commands.serve()
        except asyncio.CancelledError:
            await self.eeg.close()
            raise

    def command(self, incoming: Incoming) -> None:
        """Take one set command as the bridge reads it (host/setcommands.py)."""
        self.set_commands.take(incoming)

    async def execute(self, pod_id: str, payload: bytes) -> dict:
        """Carry out one set command; returns its result."""
        return (await self.set_commands.execute(pod_id, payload))[1]

    def update(self, pod_id: str, payload: bytes) -> None:
        """Take one part of a firmware bundle as the bridge reads it (host/updates.py)."""
        self.updates.take(pod_id, payload)

    def pod_input(self, item: PodInput) -> None:
        """Take one marker or participant code as the bridge reads it and answer it on
        ``<leaf>/result``. Never blocks, never raises."""
        try:
            result = self._input(item)
        except Exception as exc:  # noqa: BLE001  (a failed handler costs this message only)
            result = {"ok": False, "error": self.failures.contain(item.leaf, topics.pod(item.pod_id, item.leaf), exc),
                      "field": None}
            self.host_state.changed()
        if not result["ok"] and not result.get("busy") and not result.get("queued"):
            # back-pressure (a full annotation queue) is not bad input: the recorder logs it itself
            log.warning("%s for pod %s refused: %s", item.leaf, item.pod_id, result["error"])
            self.count_bad(self.pods.get(item.pod_id))
        if (topic := result_topic(item.pod_id, item.leaf)) is not None:
            self.bridge.publish_nowait(topic, result, qos=1)

    def _input(self, item: PodInput) -> dict[str, Any]:
        try:
            self._check_input(item.pod_id, item.leaf, item.payload)
        except InboundError as exc:
            return {"ok": False, "error": exc.reason, "field": exc.field}
        return self.eeg.handle_input(item.pod_id, item.leaf, item.payload)

    def _check_input(self, pod_id: str, leaf: str, payload: bytes) -> None:
        """Refuse (InboundError) a marker or participant payload that the bounded decoder
        refuses, or whose pod id, participant code or marker time cannot be taken."""
        topic = topics.pod(pod_id, leaf)
        if problem := pod_id_problem(pod_id):
            raise self.inbound.refuse(topic, "value", problem, "pod_id")
        if problem := pod_input_problem(leaf, self.inbound.decode(topic, payload)):
            raise self.inbound.refuse(topic, "value", problem[1], problem[0])

    async def fade_all(self) -> None:
        """Fade every online pod to off (the safe scene) and wait for the fade to finish."""
        fade_ms = self.config.pods.stop_fade_ms
        off = commands.SceneSpec(effect="off", brightness=0.0, color=(0, 0, 0), transition_ms=fade_ms).fields()
        online = [s for s in self.pods.values() if s.state.link == st.ONLINE]
        if not online:
            return
        results = await asyncio.gather(*(s.command("scene", off) for s in online), return_exceptions=True)
        for session, res in zip(online, results):
            if isinstance(res, BaseException) or res[0] != "ack":
                log.warning("pod %s: fade to off on stop failed: %r", session.state.pod_id, res)
        log.info("faded %d pod(s) to off over %d ms", len(online), fade_ms)
        await asyncio.sleep(fade_ms / 1000)

    def count_bad(self, session: PodSession | None) -> None:
        self.bad_commands += 1
        if session is not None:
            session.state.counters.commands_bad += 1
            session.changed()
        self.host_state.changed()

    # -- host state ---------------------------------------------------------------
    def _host_json(self) -> dict[str, Any]:
        return {
            "host_id": self.config.host.id,
            "pods": sorted(self.pods),
            "bad_commands": self.bad_commands,
            "duplicate_commands": self.set_commands.duplicates,
            "busy_commands": sum(self.set_commands.gate.busy.values()),
            "commands": self.set_commands.to_json(),
            "inbound_refused": self.inbound.refused.to_json(),
            "refused_links": self._refused_links(),
            "handler_failures": self.failures.to_json(),
            "restarts": dict(sorted(self.restarts.items())),
            "updated": st.now_iso(),
        }
