"""The hub: ties port sessions to the MQTT bridge.

It owns the pod-id registry (one session per pod id), pumps each session's
events to MQTT, and carries out set commands arriving from MQTT.
"""
from __future__ import annotations

import asyncio
import logging

from . import commands, topics
from . import state as st
from .config import Config
from .mqtt import MqttBridge
from .session import CommandError, CommandTimeout, PodSession
from .streams import EegStreams
from .transport import TransportError, create

log = logging.getLogger(__name__)


class Hub:
    def __init__(self, config: Config, bridge: MqttBridge):
        self.config = config
        self.bridge = bridge
        self.pods: dict[str, PodSession] = {}  # pod id -> the session holding it
        self.bad_commands = 0
        self.eeg = EegStreams(config, bridge)  # per-pod EEG streams: order, replay, recorder, LSL, MQTT

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
        transport = create("serial", path, self.config.serial.baudrate)
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
                await asyncio.wait_for(pump, 3.0)
            except Exception as exc:  # noqa: BLE001  (a stuck broker must not stop the port closing)
                log.debug("pump %s: %r", path, exc)
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
                    self.eeg.online(session)  # (re)attach the pod's EEG stream to this session
                session.state.eeg = self.eeg.state_of(pod_id)
                await bridge.publish(topics.pod(pod_id, "state"), session.state.to_json(), qos=1, retain=True)
        finally:
            if available:
                bridge.pod_available(available, False)

    # -- commands ---------------------------------------------------------------
    async def serve_commands(self) -> None:
        """Serve set commands and the other pod inputs (markers, participant) until cancelled.

        Cancelling it is hostd stopping: the pods' EEG streams are closed on the way
        out, so every recording ends with its last samples and annotations."""
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._serve_inputs())
                async for pod_id, payload in self.bridge.commands():
                    tg.create_task(self._set(pod_id, payload))
        finally:
            await self.eeg.close()

    async def _serve_inputs(self) -> None:
        async for pod_id, leaf, payload in self.bridge.inputs():
            result = self.eeg.handle_input(pod_id, leaf, payload)
            if not result["ok"]:
                log.warning("%s for pod %s refused: %s", leaf, pod_id, result["error"])
                self._count_bad(self.pods.get(pod_id))
            await self.bridge.publish(topics.pod(pod_id, f"{leaf}/result"), result, qos=1)

    async def _set(self, pod_id: str, payload: bytes) -> None:
        result = await self.execute(pod_id, payload)
        if not result["ok"]:
            level = logging.INFO if "nack" in result else logging.WARNING
            log.log(level, "set for pod %s failed: %s", pod_id, result.get("error") or result.get("nack"))
        await self.bridge.publish(topics.pod(pod_id, "set/result"), result, qos=1)

    async def execute(self, pod_id: str, payload: bytes) -> dict:
        """Carry out one set command; always returns a result, never raises."""
        session = self.pods.get(pod_id)
        try:
            cmd = commands.parse(payload)
        except commands.BadCommand as exc:
            self._count_bad(session)
            return exc.result()
        if session is None:
            self._count_bad(None)
            return commands.error_result(cmd.id, f"pod {pod_id} is not connected to host {self.config.host.id}", "pod_id")
        try:
            answer, reason = await session.command("scene", cmd.scene.fields())
        except CommandTimeout as exc:
            return commands.error_result(cmd.id, f"timeout: {exc}")
        except CommandError as exc:
            return commands.error_result(cmd.id, str(exc), "pod_id")
        if answer == "ack":
            sc = cmd.scene
            self.eeg.annotate(pod_id, f"scene: {sc.effect} brightness {sc.brightness:g} color {list(sc.color)} "
                                      f"transition {sc.transition_ms} ms period {sc.period_ms} ms")
            return commands.ok_result(cmd.id)
        return commands.nack_result(cmd.id, reason)

    def _count_bad(self, session: PodSession | None) -> None:
        self.bad_commands += 1
        if session is not None:
            session.state.counters.commands_bad += 1
            session.changed()
        asyncio.create_task(self.publish_host_state())

    async def publish_host_state(self) -> None:
        state = {"host_id": self.config.host.id, "pods": sorted(self.pods), "bad_commands": self.bad_commands,
                 "updated": st.now_iso()}
        await self.bridge.publish(topics.host(self.config.host.id, "state"), state, qos=1, retain=True)
