"""The hub: ties port sessions to the MQTT bridge.

It owns the pod-id registry (one session per pod id), pumps each session's
events to MQTT, and carries out set commands arriving from MQTT.
"""
from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict

from . import commands, discovery, topics
from . import state as st
from .config import Config
from .mqtt import MqttBridge
from .session import CommandError, CommandTimeout, PodSession
from .state_publish import StatePublisher
from .streams import EegStreams
from .transport import TransportError, create

log = logging.getLogger(__name__)


class Hub:
    def __init__(self, config: Config, bridge: MqttBridge):
        self.config = config
        self.bridge = bridge
        self.pods: dict[str, PodSession] = {}  # pod id -> the session holding it
        self.bad_commands = 0
        self.duplicate_commands = 0
        # (pod id, command id) -> result future: a command re-delivered with the
        # same id (QoS 1 re-delivery, a client retry) gets the same result and
        # never reaches the pod twice
        self._results: OrderedDict[tuple[str, str], asyncio.Future] = OrderedDict()
        self.eeg = EegStreams(config, bridge)  # per-pod EEG streams: order, replay, recorder, LSL, MQTT
        self.states = StatePublisher(bridge)  # pods/<id>/state: coalesced, latest wins

    # -- Claims (see session.Claims) -------------------------------------------
    def claim(self, pod_id: str, session: PodSession) -> PodSession | None:
        holder = self.pods.setdefault(pod_id, session)
        return None if holder is session else holder

    def release(self, pod_id: str, session: PodSession) -> None:
        if self.pods.get(pod_id) is session:
            del self.pods[pod_id]

    # -- ports ----------------------------------------------------------------
    async def serve_port(self, path: str) -> None:
        """Run one session on ``path`` until the port goes away."""
        await self.serve(create("serial", path, self.config.serial.baudrate))

    def start_transports(self) -> list[asyncio.Task]:
        """Supervisors for the BLE and USB pods named in the config (serial has the port scanner)."""
        from .links import start_ble_and_usb  # imports bleak / pyusb only when configured

        return start_ble_and_usb(self.config, self.serve)

    async def serve(self, transport) -> None:
        """Run one pod session on an unopened transport until the link ends."""
        path = transport.name
        try:
            await transport.open()
        except TransportError as exc:
            log.warning("%s", exc)
            return
        log.info("port %s opened", path)
        session = PodSession(transport, self.config.pods, self.config.host.id, claims=self)
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
            await transport.close()

    async def _pump(self, session: PodSession) -> None:
        bridge = self.bridge
        available: str | None = None  # pod id we made "online" on MQTT
        try:
            while (event := await session.events.get()) is not None:
                kind, payload = event
                pod_id = session.claimed
                if pod_id is None:
                    continue  # not yet identified, or refused as a duplicate: nothing to publish
                if kind == "eeg":
                    self.eeg.eeg(pod_id, payload)
                    continue
                if kind == "bands":
                    self.eeg.bands(pod_id, payload)
                    continue
                online = session.state.link == st.ONLINE
                if available and (not online or available != pod_id):
                    bridge.pod_available(available, False)
                    available = None
                if online and available is None:
                    bridge.pod_available(pod_id, True)
                    available = pod_id
                    await self._discover(pod_id, session)
                    self.eeg.online(session)  # (re)attach the pod's EEG stream to this session
                self.states.changed(pod_id, lambda pod_id=pod_id: self._state_json(pod_id, session),
                                    session.state.link, session.state.reason)
            if session.claimed:
                await self.states.final(session.claimed)  # "offline": on the broker before the port closes
        finally:
            if available:
                bridge.pod_available(available, False)

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

    # -- commands ---------------------------------------------------------------
    async def serve_commands(self) -> None:
        """Serve set commands and the other pod inputs (markers, participant) until cancelled.

        Cancelling it is hostd stopping: the pods' EEG streams are closed on the way
        out, so every recording ends with its last samples and annotations."""
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._serve_inputs())
                async for incoming in self.bridge.commands():
                    tg.create_task(self._set(incoming))
        finally:
            await self.eeg.close()

    async def _serve_inputs(self) -> None:
        async for pod_id, leaf, payload in self.bridge.inputs():
            result = self.eeg.handle_input(pod_id, leaf, payload)
            if not result["ok"]:
                log.warning("%s for pod %s refused: %s", leaf, pod_id, result["error"])
                self._count_bad(self.pods.get(pod_id))
            await self.bridge.publish(topics.pod(pod_id, f"{leaf}/result"), result, qos=1)

    async def _set(self, incoming) -> None:
        pod_id = incoming.pod_id
        result = await self.execute(pod_id, incoming.payload)
        if not result["ok"]:
            level = logging.INFO if "nack" in result else logging.WARNING
            log.log(level, "set for pod %s failed: %s", pod_id, result.get("error") or result.get("nack"))
        await self.bridge.reply(topics.pod(pod_id, "set/result"), result, incoming)

    async def execute(self, pod_id: str, payload: bytes) -> dict:
        """Carry out one set command; always returns a result, never raises.

        A command whose id was seen before for this pod is not sent again: it
        gets the first one's result (waiting for it if still in flight), with
        ``"duplicate": true``.
        """
        try:
            cmd_id = commands.peek_id(payload)
        except commands.BadCommand:
            cmd_id = None
        if cmd_id is None:
            return await self._execute(pod_id, payload)
        key = (pod_id, cmd_id)
        fut = self._results.get(key)
        if fut is not None:
            self.duplicate_commands += 1
            self._results.move_to_end(key)
            return {**await asyncio.shield(fut), "duplicate": True}
        fut = asyncio.get_running_loop().create_future()
        self._results[key] = fut
        while len(self._results) > self.config.mqtt.command_cache:
            self._results.popitem(last=False)
        try:
            result = await self._execute(pod_id, payload)
        except BaseException:
            self._results.pop(key, None)  # cancelled: a re-delivery may try again
            fut.cancel()
            raise
        if result.get("field") == "pod_id" or str(result.get("error", "")).startswith("timeout"):
            self._results.pop(key, None)  # not carried out: a retry with this id may succeed later
        fut.set_result(result)
        return result

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

    async def _online(self, pod_id: str) -> PodSession | None:
        """The pod's session once it is online, waiting up to ``command_wait_s`` (a command queued
        while hostd restarted, or sent during a brief link loss, finds its pod)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.pods.command_wait_s
        while True:
            session = self.pods.get(pod_id)
            if (session is not None and session.state.link == st.ONLINE) or loop.time() >= deadline:
                return session
            await asyncio.sleep(0.05)

    async def _execute(self, pod_id: str, payload: bytes) -> dict:
        session = self.pods.get(pod_id)
        try:
            cmd = commands.parse(payload)
        except commands.BadCommand as exc:
            self._count_bad(session)
            return exc.result()
        session = await self._online(pod_id)
        if session is None:
            self._count_bad(None)
            return commands.error_result(cmd.id, f"pod {pod_id} is not connected to host {self.config.host.id}", "pod_id")
        for name, fields in cmd.messages():
            try:
                answer, reason = await session.command(name, fields)
            except CommandTimeout as exc:
                return commands.error_result(cmd.id, f"timeout: {exc}")
            except CommandError as exc:
                return commands.error_result(cmd.id, str(exc), "pod_id")
            if answer != "ack":
                return commands.nack_result(cmd.id, reason)
        if cmd.safe_mode:
            self.eeg.annotate(pod_id, "safe mode: the pod resets, its firmware stays stopped")
        if cmd.night is not None:
            nt = cmd.night
            self.eeg.annotate(pod_id, f"night: {nt.mode} {nt.start_min}-{nt.end_min} min")
        if cmd.scene is not None:
            sc = cmd.scene
            self.eeg.annotate(pod_id, f"scene: {sc.effect} brightness {sc.brightness:g} color {list(sc.color)} "
                                      f"transition {sc.transition_ms} ms period {sc.period_ms} ms")
        return commands.ok_result(cmd.id)

    def _count_bad(self, session: PodSession | None) -> None:
        self.bad_commands += 1
        if session is not None:
            session.state.counters.commands_bad += 1
            session.changed()
        asyncio.create_task(self.publish_host_state())

    async def publish_host_state(self) -> None:
        state = {"host_id": self.config.host.id, "pods": sorted(self.pods), "bad_commands": self.bad_commands,
                 "duplicate_commands": self.duplicate_commands, "updated": st.now_iso()}
        await self.bridge.publish(topics.host(self.config.host.id, "state"), state, qos=1, retain=True)
