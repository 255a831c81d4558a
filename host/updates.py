"""Firmware updates over the link: a bundle from MQTT, sent to its pod, committed, confirmed.

The parts of a bundle arrive on ``pods/<id>/update`` (host/update_parts.py);
once whole and checked, hostd sends it to the pod (docs/update.md "The
transfer"): UPDATE_BEGIN, the manifest then the payload as UPDATE_DATA chunks,
UPDATE_COMMIT; the pod resets into the new build, and when its HELLO names
the bundle's build hash, UPDATE_CONFIRM keeps it.

Pacing: chunks go out while fewer than ``WINDOW`` bytes are beyond the first
offset the pod reports missing (UPDATE_STATUS ``next``, every few chunks), so
the link never carries more than the pod has taken in; EEG goes the other way
and the pod handles each chunk between its other work. A chunk lost (CRC,
overrun) holds ``next`` back: after ``STALL_S`` without progress the pod is
asked again (UPDATE_BEGIN of the same transfer resumes it) and the chunks go
again from ``next``. A link lost or a pod reset mid-transfer: hostd waits for
the pod to come back online and resumes the same way.

A pod whose firmware predates the update messages (its state lists them
under ``unsupported``) is updated through its MicroPython REPL instead
(host/repl_update.py), then confirmed the same way.

The result goes to ``pods/<id>/update/result``: ``ok``, ``refused`` (the pod's
reason, or what was wrong with the bundle), ``timeout``, ``busy`` or ``error``,
with the ``path`` the update took (``link`` or ``repl``); progress to the pod's
state (``update``) and to ``pods/<id>/update/progress``.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
import zlib
from typing import TYPE_CHECKING, Any

from ..protocol.ids import pod_id_problem
from ..protocol.messages import UPDATE_CHUNK, UPDATE_PART_MANIFEST, UPDATE_PART_PAYLOAD
from . import state as st
from . import topics
from .repl_update import BY_HAND, ReplFailed, ReplRefused, ReplUpdate
from .session import CommandTimeout, NotOnline, PodSession, Unsupported
from .transport import TransportClosed
from .update_parts import Assembly, BadPart, Packed, parse, unpack

if TYPE_CHECKING:
    from .hub import Hub

log = logging.getLogger(__name__)

WINDOW = 8 * UPDATE_CHUNK  # bytes sent beyond the pod's first missing offset
STALL_S = 0.5  # no progress this long: ask the pod where it is, send again from there
ONLINE_WAIT_S = 30.0  # a pod gone (link lost, reset) this long: the update times out
REBOOT_WAIT_S = 60.0  # after the commit: the pod back with the new build within this
ASSEMBLY_IDLE_S = 60.0  # a bundle whose parts stop coming is dropped
MAX_ASSEMBLIES = 16
MAX_HELD = 64 * 1024 * 1024  # bytes of bundles being put together at once
PROGRESS_S = 0.5  # progress published at most this often
RETRY_S = 0.1  # after a failed round, before the next
NO_PROGRESS_S = 60.0  # rounds that bring the pod no byte further for this long: the update times out
_WAYS = {"link": " over the link", "repl": " through its REPL"}  # the result's path, in the log


class Refused(Exception):
    """The pod (or hostd, for the bundle) refused the update; the message says why."""


class TimedOut(Exception):
    """The pod did not come back or answer in time."""


class _Again(Exception):
    """Ask the pod where it is and go on from there."""


class Updates:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._assemblies: dict[tuple[str, str], Assembly] = {}
        self._running: dict[str, asyncio.Task] = {}  # pod id -> its transfer
        self._group: asyncio.TaskGroup | None = None
        self.refused_parts = 0

    async def serve(self) -> None:
        """Hold the transfers under way until cancelled."""
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                await asyncio.get_running_loop().create_future()
        finally:
            self._group = None
            self._running.clear()

    # -- intake -----------------------------------------------------------------------
    def take(self, pod_id: str, payload: bytes) -> None:
        """One part as the bridge reads it. Never blocks, never raises."""
        try:
            self._take(pod_id, payload)
        except BadPart as exc:
            self.refused_parts += 1
            self.hub.count_bad(self.hub.pods.get(pod_id))  # counted with the bad commands
            log.warning("update for pod %s: %s", pod_id, exc)
            self._result(pod_id, None, "refused", str(exc))
        except Exception as exc:  # noqa: BLE001  (a failed handler costs this part only)
            error = self.hub.failures.contain("update", topics.pod(pod_id, "update"), exc)
            self._result(pod_id, None, "error", error)
            self.hub.host_state.changed()

    def _take(self, pod_id: str, payload: bytes) -> None:
        if problem := pod_id_problem(pod_id):
            raise BadPart(problem)
        if len(payload) > self.hub.config.mqtt.max_payload:
            raise BadPart(f"part of {len(payload)} bytes, over mqtt.max_payload {self.hub.config.mqtt.max_payload}")
        part, data = parse(payload)
        now = time.monotonic()
        for key, a in list(self._assemblies.items()):
            if now - a.last > ASSEMBLY_IDLE_S:
                del self._assemblies[key]
        key = (pod_id, part["id"])
        a = self._assemblies.get(key)
        if a is None:
            if len(self._assemblies) >= MAX_ASSEMBLIES:
                raise BadPart(f"more than {MAX_ASSEMBLIES} bundles arriving at once")
            if sum(x.size for x in self._assemblies.values()) + part["size"] > MAX_HELD:
                raise BadPart(f"more than {MAX_HELD} bytes of bundles arriving at once")
            a = self._assemblies[key] = Assembly(part["id"], part["count"], part["size"], part["sha256"],
                                                 part["confirm_s"])
        elif (a.count, a.size, a.sha256) != (part["count"], part["size"], part["sha256"]):
            del self._assemblies[key]
            raise BadPart(f"bundle {part['id']}: a part announces another count, size or sha256")
        a.parts[part["index"]] = data
        a.last = now
        if sum(len(d) for d in a.parts.values()) > a.size:
            del self._assemblies[key]
            raise BadPart(f"bundle {part['id']}: parts hold more than its {a.size} bytes")
        if len(a.parts) < a.count:
            return
        del self._assemblies[key]
        try:
            packed = unpack(a.blob())
        except BadPart as exc:
            raise BadPart(f"bundle {a.bundle_id}: {exc}") from None
        self._start(pod_id, a.bundle_id, packed, a.confirm_s)

    def _start(self, pod_id: str, bundle_id: str, packed: Packed, confirm_s: float) -> None:
        running = self._running.get(pod_id)
        if running is not None and not running.done():
            self._result(pod_id, bundle_id, "busy", "an update of this pod is under way")
            return
        if self._group is None:
            self._result(pod_id, bundle_id, "error", "hostd's update service is not running")
            return
        self._running[pod_id] = self._group.create_task(self._run(pod_id, bundle_id, packed, confirm_s))

    # -- one update -------------------------------------------------------------------
    async def _run(self, pod_id: str, bundle_id: str, packed: Packed, confirm_s: float) -> None:
        t0 = time.monotonic()
        log.info("update of pod %s to build %08x: %d bytes", pod_id, packed.build_hash, len(packed.payload))
        path: list[str] = []  # the way the update took, once known
        try:
            await self._update(pod_id, packed, confirm_s, path)
        except (Refused, ReplRefused) as exc:
            self._finish(pod_id, bundle_id, "refused", str(exc), packed, t0, path)
        except TimedOut as exc:
            self._finish(pod_id, bundle_id, "timeout", str(exc), packed, t0, path)
        except ReplFailed as exc:
            self._finish(pod_id, bundle_id, "error", str(exc), packed, t0, path)
        except asyncio.CancelledError:
            self._finish(pod_id, bundle_id, "error", "hostd stopped before the update ended", packed, t0, path)
            raise
        except Exception as exc:  # noqa: BLE001  (contained: this update fails, hostd goes on)
            error = self.hub.failures.contain("update", topics.pod(pod_id, "update"), exc)
            self._finish(pod_id, bundle_id, "error", error, packed, t0, path)
        else:
            self._finish(pod_id, bundle_id, "ok", None, packed, t0, path)
        finally:
            self._running.pop(pod_id, None)

    async def _update(self, pod_id: str, packed: Packed, confirm_s: float, path: list[str]) -> None:
        """Over the link if the pod knows the update messages, else through its REPL; then confirmed."""
        transfer = Transfer(self, pod_id, packed, confirm_s)
        session = await transfer._online()
        if session.supports("update_begin"):
            path.append("link")
            await transfer.run()
            return
        path.append("repl")
        boot_id = session.state.boot_id
        await ReplUpdate(self, pod_id, packed).run(session)
        try:
            await transfer.confirm_after(boot_id)
        except (TimedOut, Refused) as exc:
            raise type(exc)(f"{exc}. Written through its REPL, the new build has no earlier build to go back to "
                            f"(the old firmware predates slots and was replaced): {BY_HAND}") from None

    def _finish(self, pod_id: str, bundle_id: str, result: str, reason: str | None, packed: Packed,
                t0: float, path: list[str]) -> None:
        seconds = round(time.monotonic() - t0, 2)
        level = logging.INFO if result == "ok" else logging.WARNING
        way = _WAYS.get(path[0], "") if path else ""
        log.log(level, "update of pod %s to build %08x%s: %s%s (%.1f s)", pod_id, packed.build_hash, way, result,
                f": {reason}" if reason else "", seconds)
        session = self.hub.pods.get(pod_id)
        if session is not None and (session.state.update is not None or result == "ok"):
            # after an update through the REPL the pod's session is a new one: the state says so afresh
            shown = session.state.update or {"received": len(packed.payload), "total": len(packed.payload),
                                             "build_hash": f"0x{packed.build_hash:08x}"}
            session.state.update = dict(shown, state=result if result != "ok" else "confirmed")
            session.changed()
        self._result(pod_id, bundle_id, result, reason, build_hash=packed.build_hash, seconds=seconds,
                     path=path[0] if path else None)

    def _result(self, pod_id: str, bundle_id: str | None, result: str, reason: str | None, **extra: Any) -> None:
        try:
            topic = topics.pod(pod_id, "update/result")
        except topics.TopicError:
            return
        out: dict[str, Any] = {"id": bundle_id, "result": result, "ok": result == "ok", "reason": reason,
                               "path": extra.get("path")}
        if "build_hash" in extra:
            out["build_hash"] = f"0x{extra['build_hash']:08x}"
            out["seconds"] = extra["seconds"]
        self.hub.bridge.publish_nowait(topic, out, qos=1)

    def progress(self, pod_id: str, update: dict[str, Any]) -> None:
        self.hub.bridge.publish_nowait(topics.pod(pod_id, "update/progress"), update, qos=0)


class Transfer:
    """One bundle to one pod, resumed across link losses and resets until ok, refused or timed out."""

    def __init__(self, owner: Updates, pod_id: str, packed: Packed, confirm_s: float) -> None:
        self.owner = owner
        self.hub = owner.hub
        self.pod_id = pod_id
        self.b = packed
        self.confirm_ms = int(confirm_s * 1000)
        self.tid = random.randint(1, 0xFFFF)
        self._said = 0.0
        self._boot_id: int | None = None  # the pod's boot before the commit
        self._committed = False
        self._best = -1  # the furthest the pod has been (state, next), and when it got there
        self._best_at = time.monotonic()

    async def run(self) -> None:
        last = ""
        while True:
            session = await self._online()
            try:
                if await self._transfer(session):
                    break
            except (NotOnline, CommandTimeout, TransportClosed, _Again) as exc:
                # gone for a moment or lost track: resume where the pod is, once its session
                # has seen what happened (a closed port fails at once: never in a tight loop)
                why = str(exc) or "no progress for %.1f s" % STALL_S
                if time.monotonic() - self._best_at > NO_PROGRESS_S:
                    raise TimedOut(f"pod {self.pod_id}: no progress for {NO_PROGRESS_S:g} s (last: {why})") from None
                if why != last:
                    log.info("update of pod %s: %s; resuming where the pod is", self.pod_id, why)
                last = why
                await asyncio.sleep(RETRY_S)
                continue
        await self._confirm()

    async def _online(self, want_build: int | None = None, boot_id: int | None = None,
                      wait_s: float = ONLINE_WAIT_S) -> PodSession:
        deadline = time.monotonic() + wait_s
        while True:
            s = self.hub.pods.get(self.pod_id)
            if s is not None and s.state.link == st.ONLINE:
                if want_build is None or (s.state.build_hash == want_build and s.state.boot_id != boot_id):
                    return s
                if boot_id is not None and s.state.boot_id != boot_id:  # back, but not with the new build
                    raise Refused(f"pod {self.pod_id} came back with build {s.state.build_hash or 0:08x}, not "
                                  f"{want_build:08x}: the new build did not start and was rolled back")
            if time.monotonic() >= deadline:
                if want_build is not None:
                    raise TimedOut(f"pod {self.pod_id} did not come back with build {want_build:08x} "
                                   f"within {wait_s:g} s (it rolls back by itself)")
                raise TimedOut(f"pod {self.pod_id} not online within {wait_s:g} s")
            await asyncio.sleep(0.05)

    def _status(self, session: PodSession) -> dict[str, Any]:
        s = session.update_status
        if s is None or s["transfer"] != self.tid:
            raise _Again()
        step = {"manifest": 0, "data": 1}.get(s["state"], 2) * 2**32 + s["next"]
        if step > self._best:  # further than ever: the update is moving
            self._best, self._best_at = step, time.monotonic()
        return s

    def _show(self, session: PodSession, s: dict[str, Any], force: bool = False) -> None:
        update = {"state": s["state"], "received": s["received"] if s["state"] == "data" else 0,
                  "total": len(self.b.payload), "build_hash": f"0x{self.b.build_hash:08x}"}
        session.state.update = update
        session.changed()
        now = time.monotonic()
        if force or now - self._said >= PROGRESS_S:
            self._said = now
            self.owner.progress(self.pod_id, update)

    async def _command(self, session: PodSession, name: str, fields: dict[str, Any]) -> str | None:
        """None if acknowledged, else the pod's reason (UPDATE_STATUS's, or the NACK's)."""
        try:
            answer, reason = await session.command(name, fields)
        except Unsupported as exc:
            raise Refused(f"the pod's firmware cannot be updated over the link ({exc})") from None
        if answer == "ack":
            return None
        s = session.update_status
        return s["reason"] if s is not None and s["reason"] != "ok" else str(reason)

    async def _transfer(self, session: PodSession) -> bool:
        """True once committed; False to go round again (the pod asks for bytes again)."""
        b = self.b
        if session.state.build_hash == b.build_hash:
            return True  # committed already (its answer lost with the link) or running it: confirm it
        why = await self._command(session, "update_begin", {"transfer": self.tid, "manifest_len": len(b.manifest),
                                                            "total": len(b.payload), "tag": b.tag})
        if why is not None:
            raise Refused(f"the pod refused the update: {why}")
        s = self._status(session)
        if s["state"] == "manifest":
            await self._send(session, UPDATE_PART_MANIFEST, "manifest", b.manifest)
            s = self._status(session)
        if s["state"] == "refused":
            raise Refused(f"the pod refused the bundle: {s['reason']}")
        if s["state"] != "data":
            raise _Again()
        if s["next"]:
            log.info("update of pod %s: the pod holds %d of %d bytes; resuming at byte %d", self.pod_id,
                     s["received"], s["total"], s["next"])
        self._show(session, s, force=True)
        await self._send(session, UPDATE_PART_PAYLOAD, "data", b.payload)
        self._boot_id = session.state.boot_id
        self._committed = True  # asked: from here the pod may come back with the new build
        why = await self._command(session, "update_commit", {"transfer": self.tid, "confirm_ms": self.confirm_ms})
        if why in ("incomplete", "hash"):
            self._committed = False
            return False  # bytes missing, or a file to send again: the pod says which
        if why is not None:
            raise Refused(f"the pod refused to commit: {why}")
        self._show(session, self._status(session), force=True)
        return True

    async def _send(self, session: PodSession, part: int, state: str, data: bytes) -> None:
        """Send ``data`` from the pod's first missing offset until it holds all of it."""
        total = len(data)
        s = self._status(session)
        sent = s["next"]
        seen, since = s["next"], time.monotonic()
        while True:
            s = self._status(session)
            if s["state"] != state:
                return
            nxt = s["next"]
            if nxt >= total:
                return
            if nxt != seen:
                seen, since = nxt, time.monotonic()
            sent = max(sent, nxt)
            while sent < total and sent - nxt < WINDOW:
                chunk = data[sent:sent + UPDATE_CHUNK]
                await session.send("update_data", {"part": part, "offset": sent, "crc": _crc(chunk), "data": chunk})
                sent += len(chunk)
            session.update_evt.clear()
            try:
                async with asyncio.timeout(STALL_S):
                    await session.update_evt.wait()
            except TimeoutError:
                if session.state.link != st.ONLINE:
                    raise NotOnline(f"pod {self.pod_id} went offline during the update") from None
                if time.monotonic() - since >= STALL_S:
                    raise _Again() from None  # lost chunks or a lost status: ask, then from next
            if state == "data":
                self._show(session, self._status(session))

    async def confirm_after(self, boot_id: int | None) -> None:
        """Confirm the bundle's build, written by other means, once the pod is back from boot
        ``boot_id`` running it (Refused if it comes back with another build, TimedOut if not back)."""
        self._boot_id, self._committed = boot_id, True
        await self._confirm()

    async def _confirm(self) -> None:
        session = await self._online(self.b.build_hash, self._boot_id if self._committed else None, REBOOT_WAIT_S)
        try:
            why = await self._command(session, "update_confirm", {"build_hash": self.b.build_hash})
        except (NotOnline, CommandTimeout) as exc:
            raise TimedOut(f"pod {self.pod_id}: confirming build {self.b.build_hash:08x}: {exc}") from None
        if why is not None:
            raise Refused(f"the pod refused to confirm build {self.b.build_hash:08x}: {why}")


def _crc(data: bytes) -> int:
    return zlib.crc32(data)
