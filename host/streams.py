"""The hub's EEG side: one EegStream per pod id, its sinks (recorder, LSL, MQTT) and inputs.

A stream outlives the pod's sessions (an unplugged pod that comes back with
the same boot id continues its stream and its recording), and ends when hostd
stops or the pod's channel layout changes.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from typing import Any

from . import topics
from .config import PARTICIPANT_PATTERN, Config
from .eeg import ACK, BUSY, FAILED, TOO_LONG, UNAVAILABLE, EegStream
from .eeg_publish import EegPublisher, bands_json
from .mqtt import MqttBridge
from .session import CommandError, PodSession
from .telemetry import Telemetry

log = logging.getLogger(__name__)

_MAX_MARKER = 200  # characters of marker text kept


_BUSY_RETRIES = 100  # NACK busy: the pod is still replaying an earlier range
_BUSY_WAIT_S = 0.02  # (short: the ring ages while hostd waits)

class InputError(ValueError):
    pass


class EegStreams:
    def __init__(self, config: Config, bridge: MqttBridge):
        self.config = config
        self.bridge = bridge
        self.telemetry = Telemetry(bridge)
        self.streams: dict[str, EegStream] = {}
        self._publishers: dict[str, tuple[EegPublisher, asyncio.Task]] = {}
        self._recorders: dict[str, Any] = {}
        self._ended: dict[str, dict[str, Any]] = {}  # last state of streams that ended (shown until a new one)
        self._participants: dict[str, str] = dict(config.recorder.participants)
        self._resume: dict[str, tuple[int, int]] = {}  # pod id -> (boot id, seq) a killed hostd's recording reached

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
        if resume is not None and resume[0] == s.boot_id:
            log.info("pod %s: the last recording stopped at seq %d (hostd was not stopped): resuming there",
                     pod_id, resume[1])
            stream.resume_at(resume[1])

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
            out["recording"] = {"file": rec.path.name, "seconds": rec.writer.records}
        return out

    def annotate(self, pod_id: str, text: str, t_host: float | None = None) -> bool:
        stream = self.streams.get(pod_id)
        if stream is None:
            return False
        stream.annotate(text, t_host)
        return True

    # -- streams --------------------------------------------------------------------
    def _make(self, pod_id: str, channels: int, rate_hz: int) -> EegStream:
        cfg = self.config
        publisher = EegPublisher(channels, rate_hz)
        sinks: list[Any] = [publisher]
        if cfg.recorder.enabled:
            from .recorder import Recorder, read_resume

            resume = read_resume(cfg.recorder.dir, pod_id)
            if resume is not None:
                self._resume[pod_id] = resume
            try:
                rec = Recorder(cfg.recorder.dir, pod_id, channels, rate_hz,
                               participant=self._participants.get(pod_id, cfg.recorder.participant),
                               equipment=cfg.recorder.equipment)
            except OSError as exc:
                log.error("pod %s: cannot record to %s: %s", pod_id, cfg.recorder.dir, exc)
            else:
                self._recorders[pod_id] = rec
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
            text = data.get("text")
            if not isinstance(text, str) or not text.strip():
                return {"ok": False, "error": "text: a non-empty string is required", "field": "text"}
            t = data.get("t")
            if t is not None and (not isinstance(t, int | float) or abs(t - time.time()) > 3600):
                return {"ok": False, "error": "t: Unix time within an hour of now expected", "field": "t"}
            if not self.annotate(pod_id, f"marker: {text.strip()[:_MAX_MARKER]}", t):
                return {"ok": False, "error": f"pod {pod_id} has no EEG stream on host {self.config.host.id}",
                        "field": "pod_id"}
            return {"ok": True}
        code = data.get("participant")
        if not isinstance(code, str) or not re.match(PARTICIPANT_PATTERN, code):
            return {"ok": False, "error": f"participant: a pseudonymous code matching {PARTICIPANT_PATTERN} is required",
                    "field": "participant"}
        self._participants[pod_id] = code
        rec = self._recorders.get(pod_id)
        if rec is not None:
            rec.set_participant(code)
        return {"ok": True, "participant": code}
