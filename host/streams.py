"""The hub's EEG side: one EegStream per pod id, its sinks (recorder, LSL, MQTT) and inputs.

A stream outlives the pod's sessions (an unplugged pod that comes back with
the same boot id continues its stream and its recording), and ends when hostd
stops or the pod's channel layout changes. The first stream of a pod in a run
of hostd continues where the pod's last recording ended (the recorder's resume
note), so a restart of hostd loses no sample without saying so.

A marker is answered ``ok`` only once it is queued for the recording and in
the recording's journal on disk (host/recorder.py); one the recording cannot
take now is answered with ``"busy": true`` and the reason.
"""
from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from typing import Any

from . import topics
from .config import PARTICIPANT_PATTERN, Config
from .eeg import ACK, BUSY, FAILED, TOO_LONG, UNAVAILABLE, EegStream
from .eeg_publish import EegPublisher, bands_json
from .mqtt import MqttBridge
from .recorder import AnnotationRefused, Recorder, RecorderError, ResumeNote, read_resume
from .session import CommandError, PodSession
from .telemetry import Telemetry

log = logging.getLogger(__name__)

_MAX_MARKER = 200  # characters of marker text kept


_BUSY_RETRIES = 100  # NACK busy: the pod is still replaying an earlier range
_BUSY_WAIT_S = 0.02  # (short: the ring ages while hostd waits)

class InputError(ValueError):
    pass


class NoStream(LookupError):
    """The pod has no EEG stream on this host."""


class EegStreams:
    def __init__(self, config: Config, bridge: MqttBridge):
        self.config = config
        self.bridge = bridge
        self.telemetry = Telemetry(bridge)
        self.streams: dict[str, EegStream] = {}
        self._publishers: dict[str, tuple[EegPublisher, asyncio.Task]] = {}
        self._recorders: dict[str, Recorder] = {}
        self._record_errors: dict[str, str] = {}  # pod id -> why its stream is not recorded
        self._ended: dict[str, dict[str, Any]] = {}  # last state of streams that ended (shown until a new one)
        self._participants: dict[str, str] = dict(config.recorder.participants)
        self._resume: dict[str, ResumeNote] = {}  # pod id -> where its last recording (an earlier hostd's) ended

    # -- from sessions --------------------------------------------------------------
    def online(self, session: PodSession) -> EegStream | None:
        """A session of this pod went online: attach it to the pod's stream (made if new)."""
        s = session.state
        pod_id = s.pod_id
        if not s.eeg_channels or not s.sample_rate_hz:
            return None
        stream = self.streams.get(pod_id)
        if stream is not None and (stream.channels, stream.rate_hz) != (s.eeg_channels, s.sample_rate_hz):
            log.info("pod %s now has %d channels at %d Hz: new stream", pod_id, s.eeg_channels, s.sample_rate_hz)
            self.end(pod_id)
            stream = None
        resume = None
        if stream is None:
            stream = self._make(pod_id, s.eeg_channels, s.sample_rate_hz)
            resume = self._resume.pop(pod_id, None)
        stream.new_boot(s.boot_id)
        rec = self._recorders.get(pod_id)
        if rec is not None:
            rec.boot_id = s.boot_id
        if resume is not None:
            self._resume_stream(stream, resume)

        async def request(from_seq: int, count: int) -> str:
            for _ in range(_BUSY_RETRIES):
                try:
                    answer, reason = await session.command("eeg_replay", {"from_seq": from_seq, "count": count})
                except CommandError as exc:
                    log.info("pod %s: replay request failed: %s", pod_id, exc)
                    return FAILED
                if answer == "ack":
                    return ACK
                if reason != "busy":  # the pod replays one range at a time: ask again shortly
                    break
                await asyncio.sleep(_BUSY_WAIT_S)
            return {"unavailable": UNAVAILABLE, "bad_param": TOO_LONG, "busy": BUSY}.get(reason, FAILED)

        stream.request = request
        return stream

    @staticmethod
    def _resume_stream(stream: EegStream, note: ResumeNote) -> None:
        how = "was stopped" if note.closed else "was killed"
        if note.boot_id == stream.boot_id:
            log.info("pod %s: its last recording %s ended at seq %d (hostd %s): the new one starts there",
                     stream.pod_id, note.file, note.next_seq, how)
            stream.resume_at(note.next_seq)
        else:
            log.warning("pod %s: its last recording %s ended at seq %d of boot %08x (hostd %s); the pod has "
                        "rebooted since", stream.pod_id, note.file, note.next_seq, note.boot_id, how)
            stream.resume_after_reboot(note.boot_id, note.next_seq, note.t_end)

    def eeg(self, pod_id: str, batch: dict[str, Any]) -> None:
        stream = self.streams.get(pod_id)
        if stream is not None:
            stream.push(batch["seq"], batch["samples"], batch["t_pod_ms"], batch["t_host"], replay=batch["replay"],
                        gap_before=batch["pod_gap"])

    def bands(self, pod_id: str, fields: dict[str, Any]) -> None:
        try:
            payload = bands_json(fields)
        except ValueError as exc:
            log.warning("pod %s: %s", pod_id, exc)
            return
        stream = self.streams.get(pod_id)
        if stream is not None:
            stream.railed, stream.near_railed = payload["railed"], payload["near_railed"]
        self.telemetry.put(topics.pod(pod_id, "bands"), payload)

    def state_of(self, pod_id: str | None) -> dict[str, Any]:
        stream = self.streams.get(pod_id) if pod_id else None
        if stream is None:
            return self._ended.get(pod_id, {}) if pod_id else {}
        out = stream.to_json()
        rec = self._recorders.get(pod_id)
        if rec is not None:
            out["recording"] = {"file": rec.path.name, "seconds": rec.writer.records,
                                "annotations_queued": rec.writer.annotations_pending,
                                "annotations_refused": sum(rec.refused.values()),
                                "annotations_lost": sum(rec.lost.values())}
        elif pod_id in self._record_errors:
            out["recording"] = {"error": self._record_errors[pod_id]}
        return out

    def annotation_room(self, pod_id: str, text: str) -> str | None:
        """Why the pod's recording cannot take an annotation ``text`` now (None: it can, or the
        pod is not recorded). Nothing is counted: ask before acting on what the annotation says."""
        rec = self._recorders.get(pod_id)
        return None if rec is None else rec.refusal(text)

    def add_annotation(self, pod_id: str, text: str, t_host: float | None = None) -> None:
        """Put ``text`` (a marker, a scene change) on the pod's stream at host time ``t_host`` (now
        by default): into its recording's queue and journal, and its LSL markers. Raises NoStream,
        or AnnotationRefused (counted and logged by the recorder) when the recording cannot take it."""
        stream = self.streams.get(pod_id)
        if stream is None:
            raise NoStream(pod_id)
        rec = self._recorders.get(pod_id)
        if rec is not None:
            rec.admit(text)
        stream.annotate(text, t_host)

    def annotate(self, pod_id: str, text: str, t_host: float | None = None) -> bool:
        """``add_annotation`` that never raises: True once queued, False when the pod has no stream
        or its recording refused the annotation (counted and logged there)."""
        try:
            self.add_annotation(pod_id, text, t_host)
        except (NoStream, AnnotationRefused):
            return False
        return True

    # -- streams --------------------------------------------------------------------
    def _make(self, pod_id: str, channels: int, rate_hz: int) -> EegStream:
        cfg = self.config
        publisher = EegPublisher(channels, rate_hz, cfg.mqtt.max_payload)  # what every reader accepts
        sinks: list[Any] = [publisher]
        if cfg.recorder.enabled:
            rec = self._recorder(pod_id, channels, rate_hz, first=pod_id not in self._ended)
            if rec is not None:
                sinks.append(rec)
        if cfg.lsl.enabled:
            from .lsl import LslOutlet  # pylsl loads liblsl: only when wanted

            sinks.append(LslOutlet(pod_id, channels, rate_hz, cfg.lsl.name_prefix))
        stream = EegStream(pod_id, channels, rate_hz, cfg.eeg, sinks)
        self.streams[pod_id] = stream
        self._ended.pop(pod_id, None)
        task = asyncio.create_task(self._publish_loop(pod_id, publisher), name=f"eeg publish {pod_id}")
        self._publishers[pod_id] = (publisher, task)
        return stream

    def _recorder(self, pod_id: str, channels: int, rate_hz: int, *, first: bool) -> Recorder | None:
        """The pod's new recording; on the pod's ``first`` stream in this run of hostd, also the note
        of where its last recording ended. None (logged, shown in the pod state) if it cannot be made."""
        cfg = self.config.recorder
        self._record_errors.pop(pod_id, None)
        try:
            if first:
                note = read_resume(cfg.dir, pod_id)
                if note is not None:
                    self._resume[pod_id] = note
            rec = Recorder(cfg.dir, pod_id, channels, rate_hz,
                           participant=self._participants.get(pod_id, cfg.participant), equipment=cfg.equipment)
        except (OSError, RecorderError) as exc:
            log.error("pod %s: cannot record to %s: %s", pod_id, cfg.dir, exc)
            self._record_errors[pod_id] = str(exc)
            return None
        self._recorders[pod_id] = rec
        return rec

    async def _publish_loop(self, pod_id: str, publisher: EegPublisher) -> None:
        topic = topics.pod(pod_id, "eeg")
        interval = self.config.eeg.publish_interval_s
        try:
            while True:
                if interval > 0:
                    await asyncio.sleep(interval)
                else:  # each batch as soon as the stream hands it on
                    await publisher.pending.wait()
                for payload in publisher.take():
                    self.telemetry.put(topic, payload)
        finally:
            for payload in publisher.take():  # what the stream handed on while closing
                self.telemetry.put(topic, payload)

    def end(self, pod_id: str) -> None:
        stream = self.streams.get(pod_id)
        if stream is not None:
            stream.close()
            self._ended[pod_id] = self.state_of(pod_id)
            del self.streams[pod_id]
        self._recorders.pop(pod_id, None)
        entry = self._publishers.pop(pod_id, None)
        if entry is not None:
            entry[1].cancel()

    async def close(self) -> None:
        tasks = [t for _, t in self._publishers.values()]
        for pod_id in list(self.streams):
            self.end(pod_id)
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.telemetry.close()

    # -- MQTT inputs ------------------------------------------------------------------
    def handle_input(self, pod_id: str, leaf: str, payload: bytes) -> dict[str, Any]:
        """A marker or participant message; returns the result published on ``<leaf>/result``."""
        try:
            data = json.loads(payload)
            if not isinstance(data, dict):
                raise InputError(f"{leaf}: expected a JSON object")
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return {"ok": False, "error": f"invalid JSON: {exc}", "field": None}
        except InputError as exc:
            return {"ok": False, "error": str(exc), "field": None}
        if leaf == "marker":
            return self._marker(pod_id, data)
        code = data.get("participant")
        if not isinstance(code, str) or not re.fullmatch(PARTICIPANT_PATTERN, code):
            return {"ok": False, "error": f"participant: a pseudonymous code matching {PARTICIPANT_PATTERN} is required",
                    "field": "participant"}
        self._participants[pod_id] = code
        rec = self._recorders.get(pod_id)
        if rec is not None:
            rec.set_participant(code)
        return {"ok": True, "participant": code}

    def _marker(self, pod_id: str, data: dict[str, Any]) -> dict[str, Any]:
        """Queue a marker; ``ok`` only once it is queued for the recording and journaled on disk."""
        text = data.get("text")
        if not isinstance(text, str) or not text.strip():
            return {"ok": False, "error": "text: a non-empty string is required", "field": "text"}
        t = data.get("t")
        if t is not None and not _near_now(t):
            return {"ok": False, "error": "t: Unix time within an hour of now expected", "field": "t"}
        try:
            self.add_annotation(pod_id, f"marker: {text.strip()[:_MAX_MARKER]}", t)
        except NoStream:
            return {"ok": False, "error": f"pod {pod_id} has no EEG stream on host {self.config.host.id}",
                    "field": "pod_id"}
        except AnnotationRefused as exc:
            return {"ok": False, "error": str(exc), "field": None, "busy": True}
        rec = self._recorders.get(pod_id)
        if rec is not None and not rec.journal_ok:
            return {"ok": False, "field": None, "queued": True,
                    "error": f"queued for {rec.path.name}, but its annotation journal cannot be written "
                             f"({rec.journal.error}): it is lost if hostd is killed before its next record"}
        return {"ok": True}


def _near_now(t: object) -> bool:
    """A finite Unix time (int or float, not bool) within an hour of now."""
    if isinstance(t, bool) or not isinstance(t, int | float):
        return False
    try:
        t = float(t)
    except OverflowError:
        return False
    return math.isfinite(t) and abs(t - time.time()) <= 3600
