"""Set commands from MQTT: taken as they are read, carried out on the pod, answered.

The bridge hands each command over as it reads it (``take``). The gate
(host/backpressure.py) starts it, queues it behind its pod's commands or
answers it ``busy``; a started command runs as a task of the commands
subsystem's group (``serve``). A command whose id was seen before for its pod
is not sent again: it gets the first one's result with ``"duplicate": true``.

Every command is answered on ``pods/<pod_id>/set/result`` (and on its MQTT 5
response topic): ``ok``, ``nack`` (the pod refused it; with the field and the
range it allows when the pod names them), an error naming what was wrong (and
the range, for a scene hostd knows the pod would refuse), ``busy``, or "hostd
stopped before carrying it out".

A scene without effect changes the scene the pod shows (host/commands.py): it
waits for the scene commands of its pod started before it, so it changes what
they made the pod show. A ``stop`` sends the pod FADE_SAFE and puts the marker
``stop`` into the pod's recording at the moment it was asked for (``stop (not
carried out: <why>)`` if the pod did not carry it out). A handler that
fails on one command costs that command only: it gets an error result, and the
failure is counted and logged (host/supervisor.py). Answers are handed to the
MQTT client's queue, never awaited one by one.
"""
from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Any

from ..protocol.ids import pod_id_problem
from . import commands, topics
from . import state as st
from .backpressure import CommandGate, busy_result
from .mqtt import Incoming, topic_name_problem
from .session import CommandTimeout, NotOnline, PodSession, Unsupported

if TYPE_CHECKING:
    from .hub import Hub

log = logging.getLogger(__name__)


class Outcome(enum.Enum):
    """How a set command ended; decides its log level and whether its id is remembered."""

    OK = "ok"
    NACK = "nack"  # the pod refused it
    BAD = "bad"  # refused by hostd: invalid
    ABSENT = "absent"  # the pod is not (yet) here: a retry may find it
    TIMEOUT = "timeout"  # the pod did not answer: a retry may succeed
    FAILED = "failed"  # a handler failed (contained)


_RETRYABLE = {Outcome.ABSENT, Outcome.TIMEOUT, Outcome.FAILED}  # their ids are not remembered as done


def result_topic(pod_id: str, leaf: str) -> str | None:
    """``pods/<pod_id>/<leaf>/result``; None for an id no topic can be built with (the bridge
    only ever hands over ids read from one topic level, so this is a safeguard)."""
    try:
        return topics.pod(pod_id, f"{leaf}/result")
    except topics.TopicError:
        return None


class SetCommands:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.bridge = hub.bridge
        self.gate: CommandGate[Incoming] = CommandGate()  # in flight and queued, per pod
        self.duplicates = 0
        # (pod id, command id) -> (outcome, result) future: a command re-delivered with the
        # same id (QoS 1 re-delivery, a client retry) gets the same result and never reaches
        # the pod twice
        self._results: OrderedDict[tuple[str, str], asyncio.Future] = OrderedDict()
        self._group: asyncio.TaskGroup | None = None
        # pod id -> its commands in flight that change what it shows, in the order they started
        self._showing: dict[str, list[asyncio.Future]] = {}

    # -- intake --------------------------------------------------------------------
    async def serve(self) -> None:
        """Hold the commands in flight as tasks of one group, until cancelled; the commands
        still queued then are answered "hostd stopped"."""
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                await asyncio.get_running_loop().create_future()  # until cancelled
        finally:
            self._group = None
            for incoming in self.gate.drain():
                self._stopped(incoming)

    def take(self, incoming: Incoming) -> None:
        """Take one command as the bridge reads it: start it, queue it, or answer it busy.
        Never blocks, never raises."""
        try:
            if self._group is None:
                self.gate.busy["down"] += 1
                self._busy(incoming, "hostd's command service is not running")
                return
            start, reason = self.gate.admit(incoming.pod_id, incoming, len(incoming.payload))
            if reason is not None:
                self._busy(incoming, reason)
            elif start:
                self._launch([incoming])
        except Exception as exc:  # noqa: BLE001  (a failed handler costs this command only)
            error = self.hub.failures.contain("set", topics.pod(incoming.pod_id, "set"), exc)
            self._reply(incoming, commands.error_result(self.peek_id(incoming.payload), error))
            self.hub.host_state.changed()

    def _launch(self, ready: list[Incoming]) -> None:
        """Start commands the gate counted in flight, each in a task of the group."""
        waiting = deque(ready)
        while waiting:
            incoming = waiting.popleft()  # in the order the gate gave them: a pod's in arrival order
            try:
                if self._group is None:
                    raise RuntimeError("no command group")
                self._group.create_task(self._set(incoming))
            except RuntimeError:  # the group is closing: hostd is stopping
                self._stopped(incoming)
                waiting += self.gate.done(incoming.pod_id)

    def _busy(self, incoming: Incoming, reason: str) -> None:
        session = self.hub.pods.get(incoming.pod_id)
        if session is not None:
            session.state.counters.commands_busy += 1
        log.info("set for pod %s: busy (%s)", incoming.pod_id, reason)
        self.hub.host_state.changed()
        self._reply(incoming, busy_result(self.peek_id(incoming.payload), reason))

    def _stopped(self, incoming: Incoming) -> None:
        self._reply(incoming, commands.error_result(self.peek_id(incoming.payload),
                                                    "hostd stopped before carrying it out"))

    def _reply(self, incoming: Incoming, result: dict[str, Any]) -> None:
        if (topic := result_topic(incoming.pod_id, "set")) is not None:
            self.bridge.reply_nowait(topic, result, incoming)

    def peek_id(self, payload: bytes) -> str | None:
        try:
            return commands.peek_id(payload, self.hub.inbound)
        except commands.BadCommand:
            return None

    # -- one command -----------------------------------------------------------------
    async def _set(self, incoming: Incoming) -> None:
        """Carry out one command and answer it; its place in flight is free (and the next
        queued command of its pod starts) as soon as the pod has answered."""
        pod_id = incoming.pod_id
        result: dict[str, Any] | None = None
        try:
            outcome, result = await self._answer(incoming)
        except asyncio.CancelledError:  # hostd stopping (or its commands restarting): say so
            self._stopped(incoming)
            raise
        finally:
            if result is not None:
                self._reply(incoming, result)
            self._launch(self.gate.done(pod_id))
            self.hub.host_state.changed()  # its gate counters (coalesced: at most once a second)
        if outcome is not Outcome.OK:
            level = logging.INFO if outcome is Outcome.NACK else logging.WARNING
            log.log(level, "set for pod %s failed: %s", pod_id, result.get("error") or result.get("nack"))

    async def _answer(self, incoming: Incoming) -> tuple[Outcome, dict]:
        """The command's outcome and result; a failing handler is contained here."""
        try:
            if incoming.response_topic is not None and (problem := topic_name_problem(incoming.response_topic)):
                self.hub.count_bad(self.hub.pods.get(incoming.pod_id))
                return Outcome.BAD, commands.error_result(self.peek_id(incoming.payload),
                                                          f"response topic {problem}", "response_topic")
            return await self.execute(incoming.pod_id, incoming.payload)
        except Exception as exc:  # noqa: BLE001  (a failed handler costs this command only)
            error = self.hub.failures.contain("set", topics.pod(incoming.pod_id, "set"), exc)
            self.hub.host_state.changed()
            return Outcome.FAILED, commands.error_result(self.peek_id(incoming.payload), error)

    async def execute(self, pod_id: str, payload: bytes) -> tuple[Outcome, dict]:
        """Carry out one set command: its outcome and result.

        A command whose id was seen before for this pod is not sent again: it
        gets the first one's result (waiting for it if still in flight), with
        ``"duplicate": true``.
        """
        cmd_id = self.peek_id(payload)
        if cmd_id is None or pod_id_problem(pod_id):
            return await self._execute(pod_id, payload)
        key = (pod_id, cmd_id)
        fut = self._results.get(key)
        if fut is not None:
            self.duplicates += 1
            self.hub.host_state.changed()
            self._results.move_to_end(key)
            outcome, result = await asyncio.shield(fut)
            return outcome, {**result, "duplicate": True}
        fut = asyncio.get_running_loop().create_future()
        self._results[key] = fut
        while len(self._results) > self.hub.config.mqtt.command_cache:
            self._results.popitem(last=False)
        try:
            outcome, result = await self._execute(pod_id, payload)
        except BaseException:
            self._results.pop(key, None)  # cancelled, or failed: a re-delivery may try again
            fut.cancel()
            raise
        if outcome in _RETRYABLE:
            self._results.pop(key, None)  # not carried out: a retry with this id may succeed later
        fut.set_result((outcome, result))
        return outcome, result

    async def _online(self, pod_id: str) -> PodSession | None:
        """The pod's session once it is online, waiting up to ``command_wait_s`` (a command queued
        while hostd restarted, or sent during a brief link loss, finds its pod)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.hub.config.pods.command_wait_s
        while True:
            session = self.hub.pods.get(pod_id)
            if (session is not None and session.state.link == st.ONLINE) or loop.time() >= deadline:
                return session
            await asyncio.sleep(0.05)

    async def _execute(self, pod_id: str, payload: bytes) -> tuple[Outcome, dict]:
        hub = self.hub
        session = hub.pods.get(pod_id)
        try:
            cmd = commands.parse(payload, hub.inbound, topics.pod(pod_id, "set"))
        except commands.BadCommand as exc:
            hub.count_bad(session)
            return Outcome.BAD, exc.result()
        if problem := pod_id_problem(pod_id):
            hub.count_bad(None)
            return Outcome.BAD, commands.error_result(cmd.id, problem, "pod_id")
        asked = time.time()
        session = await self._online(pod_id)
        if session is None:
            hub.count_bad(None)
            return Outcome.ABSENT, commands.error_result(
                cmd.id, f"pod {pod_id} is not connected to host {hub.config.host.id}", "pod_id")
        if cmd.scene is None and not cmd.stop:
            return await self._send(session, cmd, asked)
        earlier = list(self._showing.get(pod_id, ()))
        mine = asyncio.get_running_loop().create_future()
        self._showing.setdefault(pod_id, []).append(mine)
        try:
            if cmd.scene is not None and cmd.scene.effect is None and earlier:
                await asyncio.wait(earlier)  # change what they made the pod show
            return await self._send(session, cmd, asked)
        finally:
            mine.set_result(None)
            line = self._showing[pod_id]
            line.remove(mine)
            if not line:
                del self._showing[pod_id]

    async def _send(self, session: PodSession, cmd: commands.SetCommand, asked: float) -> tuple[Outcome, dict]:
        """Send the command's messages to the pod, in order, and annotate what it carried out
        (a stop also when the pod did not carry it out: the participant asked for it then)."""
        try:
            messages = cmd.messages(shown=session.state.scene)
        except commands.BadCommand as exc:
            self.hub.count_bad(session)
            return Outcome.BAD, exc.result()
        outcome, result = await self._carry_out(session, cmd.id, messages)
        pod_id = session.state.pod_id
        if outcome is Outcome.OK:
            self._annotate(pod_id, messages, asked)
        elif cmd.stop:
            why = result.get("nack") or result.get("error")
            self.hub.eeg.annotate(pod_id, f"marker: stop (not carried out: {why})", asked)
        return outcome, result

    async def _carry_out(self, session: PodSession, cmd_id: str | None,
                         messages: list[tuple[str, dict[str, Any]]]) -> tuple[Outcome, dict]:
        for name, fields in messages:
            try:
                answer, reason = await session.command(name, fields)
            except CommandTimeout as exc:
                return Outcome.TIMEOUT, commands.error_result(cmd_id, f"timeout: {exc}")
            except NotOnline as exc:
                return Outcome.ABSENT, commands.error_result(cmd_id, str(exc), "pod_id")
            except Unsupported as exc:  # the pod lays the message out otherwise: nothing was sent
                self.hub.count_bad(session)
                return Outcome.BAD, commands.error_result(cmd_id, str(exc))
            if answer != "ack":
                return Outcome.NACK, self._refused(cmd_id, name, fields, reason)
        return Outcome.OK, commands.ok_result(cmd_id)

    @staticmethod
    def _refused(cmd_id: str | None, name: str, fields: dict[str, Any], reason: Any) -> dict[str, Any]:
        """The result of a NACK: its reason, and the field and range the pod named (protocol/nack.py
        ``Refusal``: a plain reason from a pod that names none)."""
        field = getattr(reason, "field", None)
        if field is None:
            return commands.nack_result(cmd_id, str(reason))
        path, allowed, sent = commands.refused_field(name, field, getattr(reason, "allowed", None), fields)
        if allowed is not None and len(allowed) == 2 and all(isinstance(v, int | float) for v in allowed):
            within = f"allowed {allowed[0]}..{allowed[1]}"
        else:
            within = f"allowed {allowed}"
        return commands.nack_result(cmd_id, str(reason), path, allowed,
                                    f"the pod refused it ({reason}): {sent}, {within}")

    def _annotate(self, pod_id: str, messages: list[tuple[str, dict[str, Any]]], asked: float) -> None:
        """What a carried-out command changed, as annotations of the pod's recording."""
        eeg = self.hub.eeg
        for name, f in messages:
            if name == "safe_mode":
                eeg.annotate(pod_id, "safe mode: the pod resets, its firmware stays stopped")
            elif name == "fade_safe":
                eeg.annotate(pod_id, "marker: stop", asked)  # when the participant asked, not when the pod answered
            elif name == "night_mode":
                eeg.annotate(pod_id, f"night: {f['mode']} {f['start_min']}-{f['end_min']} min")
            elif name == "scene":
                eeg.annotate(pod_id, f"scene: {f['effect']} brightness {round(f['brightness'] / 255, 2):g} "
                                     f"color {f['color']} transition {f['transition_ms']} ms period {f['period_ms']} ms")

    def to_json(self) -> dict[str, Any]:
        return self.gate.to_json()
