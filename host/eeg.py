"""One pod's EEG sample stream, across link interruptions: order, gaps, replay.

Batches arrive from the pod's sessions (a pod that is unplugged and replugged
gets a new session; its stream lives on in the hub). The stream hands samples
to its sinks strictly in sequence order, each sample once:

- a batch that starts after the next expected sample opens a hole: the stream
  asks the pod to replay it (``eeg_replay``) and holds live data back in a
  bounded reorder buffer meanwhile; replayed batches fill the hole;
- a hole the pod cannot fill (NACK ``unavailable``, no answer, replay too
  slow, reorder buffer full) becomes an unfilled gap: counted, annotated, and,
  up to ``max_pad_s``, kept on the time axis as zeros;
- a replay hit on the wire is asked for again; of a hole that reaches back past the
  pod's ring only the part before the ring's start is given up;
- duplicates (a replay overlapping live data) are dropped and counted;
- a new boot id restarts the sequence: a discontinuity, annotated, and the samples lost
  with the pod's ring are estimated from the host clock, counted and padded;
- a recording an earlier hostd left (stopped or killed) is continued (``resume_at``): the
  samples since its last record are a hole like any other; if the pod rebooted meanwhile
  (``resume_after_reboot``) the discontinuity is annotated and the loss estimated from the
  host clock, as for a reboot seen live;
- of a hole longer than one replay can ask for (``MAX_REPLAY``, far beyond any pod's ring)
  the older part is given up at once, in one gap.

Every stream also judges its channels' signal quality over its newest samples
(host/signal_quality.py), shown as ``quality`` in its state.

Sequence numbers are 32-bit on the wire and unwrapped to Python ints here.
"""
from __future__ import annotations

import asyncio
import bisect
import logging
import time
from dataclasses import dataclass
from typing import Awaitable, Callable, Protocol

from .config import EegConfig
from .signal_quality import SignalQuality

log = logging.getLogger(__name__)

_WRAP = 1 << 32
MAX_REPLAY = 0xFFFF  # eeg_replay.count is a u16

# A hole whose replay was hit on the way (bit errors) is asked for again, up to this many times
# in a row. At a bit error rate of 1e-4 a 250-byte frame is hit with probability ~0.2, so a
# two-batch replay fails ~1 time in 3: four attempts lost about one hole in a thousand (the
# fault suite's bit-error run, ~40 holes, failed once in ~25 runs); ten lose one in ~10^5.
# A replay path that never delivers stays bounded by the reorder limit either way.
_REPLAY_ATTEMPTS = 10

# The pod sends a replay right after its ACK, interleaved with the live stream: when this many
# live batches came since the ACK (or the last replayed batch) and the hole is still open, a
# replayed batch was lost on the wire (waiting for replay_timeout_s would let later holes age
# out of the pod's ring)
_LIVE_BATCHES_WAIT = 6
_EDGE_MARGIN_DIV = 20  # a hole partly outside the ring is asked for from 1/20 s after the ring's edge

# replay answers
ACK, UNAVAILABLE, FAILED = "ack", "unavailable", "failed"
TOO_LONG = "too long"  # NACK bad_param: more samples than the pod's ring holds
BUSY = "busy"  # still busy after retries: the pod is sending an earlier replay (a slow link)

ReplayRequest = Callable[[int, int], Awaitable[str]]  # (from_seq 32-bit, count) -> ACK/UNAVAILABLE/TOO_LONG/BUSY/FAILED


class Sink(Protocol):
    """Receives a stream's samples in order. ``pos`` counts samples since the stream began
    (padding included), so ``pos / rate_hz`` is the time since the first sample. ``raw`` is
    ``n`` samples as the wire carries them (channels x 24-bit big-endian counts each):
    sinks convert in bulk (a record, a message), never per batch."""

    def samples(self, pos: int, raw: bytes, n: int, seq: int, ticks_ms: int, t_host: float) -> None: ...

    def gap(self, pos: int, lost: int, padded: bool, reason: str) -> None: ...

    def annotate(self, pos: float, text: str) -> None: ...

    def close(self) -> None: ...


@dataclass
class EegStats:
    samples: int = 0  # samples handed on in order (live + replayed, padding excluded)
    samples_replayed: int = 0
    samples_lost: int = 0  # in unfilled gaps
    duplicates: int = 0
    gaps_filled: int = 0
    gaps_unfilled: int = 0
    gaps_pod: int = 0  # batches the pod flagged GAP_BEFORE
    replays_requested: int = 0
    discontinuities: int = 0  # pod reboots (sequence restarted)
    held: int = 0  # samples waiting in the reorder buffer now


class EegStream:
    def __init__(self, pod_id: str, channels: int, rate_hz: int, cfg: EegConfig, sinks: list[Sink] | None = None):
        self.pod_id = pod_id
        self.channels = channels
        self.rate_hz = rate_hz
        self.row = 3 * channels  # bytes per sample on the wire
        self.cfg = cfg
        self.quality = SignalQuality(channels, rate_hz)  # per channel, over the newest samples handed on
        self.sinks: list[Sink] = [*(sinks or []), self.quality]
        self.stats = EegStats()
        self.boot_id: int | None = None
        self.request: ReplayRequest | None = None  # set by the hub while a session is online
        self.railed: list[int] = []
        self.near_railed: list[int] = []
        self._next: int | None = None  # unwrapped seq of the next sample to hand on
        self._pos = 0  # samples handed on, padding included
        self._held: dict[int, tuple[bytes, int, float, bool]] = {}  # first seq -> (raw, ticks_ms, t_host, replay)
        self._held_keys: list[int] = []
        self._replay: asyncio.Task | None = None
        self._progress = asyncio.Event()
        self._last_live: tuple[int, float] | None = None  # (seq after the newest live batch, its t_host)
        self._closed = False
        self._announce = True  # say which pod sequence number the stream (re)starts at
        self._reboot_from: float | None = None  # host time of the last live batch before a reboot
        self._replay_end = -1  # unwrapped seq after the newest replayed batch seen
        self._live_batches = 0  # live batches pushed (a clock for replay waits)

    # -- input ------------------------------------------------------------------
    def _unwrap(self, seq: int) -> int:
        ref = self._next if self._next is not None else (self._last_live[0] if self._last_live else None)
        if ref is None:
            return seq
        delta = (seq - ref) % _WRAP
        if delta >= _WRAP // 2:
            delta -= _WRAP
        return ref + delta

    def new_boot(self, boot_id: int) -> None:
        """The pod (re)started with ``boot_id``; a changed id restarts the sequence."""
        if self.boot_id is not None and boot_id != self.boot_id:
            self._give_up_all("pod rebooted")
            self.stats.discontinuities += 1
            self._annotate_now(f"discontinuity: pod rebooted (boot {boot_id:08x})")
            if self._last_live is not None:
                self._reboot_from = self._last_live[1]
            self._next = None
            self._last_live = None
            self._replay_end = -1
            self._announce = True
        self.boot_id = boot_id

    def resume_at(self, seq: int) -> None:
        """Continue a recording an earlier hostd (stopped or killed) left at pod sample ``seq``
        (same boot): the samples from there on are asked of the pod like any hole, and what it
        no longer holds becomes a counted, annotated gap."""
        if self._next is None:
            self._next = seq

    def resume_after_reboot(self, old_boot: int, seq: int, t_end: float | None) -> None:
        """The pod's last recording ended at ``seq`` of boot ``old_boot``, and the pod rebooted
        before this stream began: what it made after that went with its ring. Annotated as a
        discontinuity; with ``t_end``, the host time of that recording's last sample, the loss is
        estimated from the host clock, counted and marked as for a reboot seen live."""
        if self._next is not None:
            return
        self.stats.discontinuities += 1
        self._annotate_now(f"discontinuity: pod rebooted while hostd was not running (the last recording "
                           f"ended at seq {seq} of boot {old_boot:08x})")
        if t_end is not None:
            self._reboot_from = t_end

    def push(self, first_seq: int, raw: bytes, ticks_ms: int, t_host: float, *, replay: bool = False,
             gap_before: bool = False) -> None:
        """One batch from the pod: ``raw`` is its samples as on the wire."""
        if self._closed:
            return
        s = self._unwrap(first_seq)
        n = len(raw) // self.row
        self._progress.set()
        if replay:
            self._replay_end = max(self._replay_end, s + n)
        else:
            self._live_batches += 1
            if gap_before:
                self.stats.gaps_pod += 1
            if self._last_live is None or s + n > self._last_live[0]:
                self._last_live = (s + n, t_host)
        if self._next is None:
            if self._reboot_from is not None and not replay:
                self._reboot_loss(n, t_host)
            self._next = s
        if s + n <= self._next:
            self.stats.duplicates += n
            return
        if s > self._next or self._held_keys:
            if s in self._held:
                self.stats.duplicates += n
                return
            bisect.insort(self._held_keys, s)
            self._held[s] = (raw, ticks_ms, t_host, replay)
            self.stats.held += n
            self._drain()
            if self._held_keys:
                self._want_replay()
            return
        self._deliver(s, raw, ticks_ms, t_host, replay)
        self._drain()

    def _reboot_loss(self, n: int, t_host: float) -> None:
        """The first batch after a reboot: the samples the headset made between the old boot's
        last batch and this one's first sample were lost with the pod's ring. The sequence
        restarted, so their number comes from the host clock (batches are stamped on arrival,
        each about when its last sample was taken): an estimate, counted and marked as a gap."""
        t_old, self._reboot_from = self._reboot_from, None
        lost = round((t_host - t_old) * self.rate_hz) - n
        if lost <= 0:
            return
        self.stats.gaps_unfilled += 1
        self.stats.samples_lost += lost
        padded = lost <= self.cfg.max_pad_s * self.rate_hz
        log.warning("pod %s: about %d samples lost in the pod's reboot", self.pod_id, lost)
        for sink in self.sinks:
            sink.gap(self._pos, lost, padded, "pod rebooted, count estimated from the host clock")
        if padded:
            self._pos += lost

    def _drain(self) -> None:
        while self._held_keys and self._held_keys[0] <= self._next:
            s = self._held_keys.pop(0)
            raw, ticks_ms, t_host, replay = self._held.pop(s)
            n = len(raw) // self.row
            self.stats.held -= n
            if s + n <= self._next:
                self.stats.duplicates += n
                continue
            self._deliver(s, raw, ticks_ms, t_host, replay)
        limit = int(self.cfg.reorder_limit_s * self.rate_hz)
        while self.stats.held > limit:  # bounded: give up the oldest hole
            self._give_up(self._held_keys[0], "reorder buffer full")

    def _deliver(self, s: int, raw: bytes, ticks_ms: int, t_host: float, replay: bool) -> None:
        if s < self._next:  # overlaps what was already handed on
            self.stats.duplicates += self._next - s
            ticks_ms += (self._next - s) * 1000 // self.rate_hz
            raw = raw[(self._next - s) * self.row:]
            s = self._next
        n = len(raw) // self.row
        self._announce_start(s)
        for sink in self.sinks:
            sink.samples(self._pos, raw, n, s & 0xFFFFFFFF, ticks_ms, t_host)
        self._pos += n
        self._next = s + n
        self.stats.samples += n
        if replay:
            self.stats.samples_replayed += n
        self._progress.set()

    def _announce_start(self, s: int) -> None:
        if self._announce:
            self._announce = False
            boot = "?" if self.boot_id is None else f"{self.boot_id:08x}"
            for sink in self.sinks:
                sink.annotate(float(self._pos), f"stream: seq {s & 0xFFFFFFFF} (pod {self.pod_id} boot {boot})")

    def _give_up(self, until: int, reason: str) -> None:
        """Declare [next, until) lost and move on."""
        lost = until - self._next
        if lost <= 0:
            return
        self._announce_start(self._next)  # a stream may begin with a gap (resumed after a crash)
        self.stats.gaps_unfilled += 1
        self.stats.samples_lost += lost
        padded = lost <= self.cfg.max_pad_s * self.rate_hz
        log.warning("pod %s: %d samples lost before seq %d (%s)", self.pod_id, lost, until & 0xFFFFFFFF, reason)
        for sink in self.sinks:
            sink.gap(self._pos, lost, padded, reason)
        if padded:
            self._pos += lost
        self._next = until
        self._drain()

    def _give_up_all(self, reason: str) -> None:
        while self._held_keys:
            self._give_up(self._held_keys[0], reason)
            self._drain()
        if self._replay is not None:
            self._replay.cancel()
            self._replay = None

    # -- replay -----------------------------------------------------------------
    def _want_replay(self) -> None:
        if self._replay is None or self._replay.done():
            self._replay = asyncio.get_running_loop().create_task(self._replay_holes(), name=f"replay {self.pod_id}")

    async def _replay_holes(self) -> None:
        attempts, hole, span = 0, None, 0
        while self._held_keys and not self._closed:
            start, end = self._next, max(self._held_keys[0], span)
            if end - start > MAX_REPLAY:  # (a hostd stopped for minutes): no ring reaches back that far
                self._give_up(end - MAX_REPLAY, "older than a replay can reach")
                continue
            if hole != start:
                attempts, hole = 0, start
            attempts += 1
            count = min(end - start, MAX_REPLAY)
            answer = FAILED
            self._replay_end = start  # batches of an earlier replay say nothing about this one
            if self.request is not None:
                self.stats.replays_requested += 1
                log.info("pod %s: asking for samples %d..%d again", self.pod_id, start & 0xFFFFFFFF, (start + count - 1) & 0xFFFFFFFF)
                answer = await self.request(start & 0xFFFFFFFF, count)
            if answer == ACK:
                target = start + count
                deadline = time.monotonic() + self.cfg.replay_timeout_s + count / self.rate_hz
                mark = (self._live_batches, self._replay_end)
                while self._next < target and self._held_keys:
                    if self._replay_end >= target:
                        break  # the replay's last batch came, so one before it was lost on the way
                    if self._replay_end != mark[1]:
                        mark = (self._live_batches, self._replay_end)
                    elif self._live_batches - mark[0] >= _LIVE_BATCHES_WAIT:
                        break  # the live stream went on, the replay did not: lost on the way
                    self._progress.clear()
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    try:
                        async with asyncio.timeout(remaining):
                            await self._progress.wait()
                    except TimeoutError:
                        break
                if self._next >= target or not self._held_keys:
                    self.stats.gaps_filled += 1
                    continue
                if attempts < _REPLAY_ATTEMPTS:
                    continue  # ask again for what is still missing (from the new _next)
                reason = "replay incomplete"
            elif answer == FAILED and attempts < _REPLAY_ATTEMPTS:
                continue  # the request itself was lost: ask again
            elif answer == BUSY:
                attempts -= 1  # a replay still on its way is no failure (the reorder limit bounds the wait)
                continue
            elif answer in (UNAVAILABLE, TOO_LONG) and count > 1:
                # the hole starts before the oldest sample the pod holds, or is longer than its
                # ring: only its oldest part is gone. Find where the ring begins, then replay the rest
                held = await self._ring_start(start, start + count)
                if held > start and self._next == start:
                    # the oldest held samples are about to leave the ring: ask from a little later,
                    # for the whole rest of the hole at once (the probes come again as duplicates)
                    held = min(held + self.rate_hz // _EDGE_MARGIN_DIV, start + count)
                    self._give_up(held, "pod cannot replay")  # one gap (probe samples inside it are dropped)
                    span = start + count
                continue
            else:
                reason = "pod cannot replay" if answer == UNAVAILABLE else "replay request failed"
            if self._held_keys:
                self._give_up(self._held_keys[0], reason)

    async def _ring_start(self, lo: int, hi: int) -> int:
        """The oldest sample in (lo, hi] the pod can still replay (hi: none), by bisection with
        one-sample requests: a refused one is older than the ring; an accepted one is replayed
        (a sample of the hole, held like any other), which costs the pod one small frame."""
        while hi - lo > 1 and self.request is not None and not self._closed:
            mid = (lo + hi) // 2
            self.stats.replays_requested += 1
            answer = await self.request(mid & 0xFFFFFFFF, 1)
            if answer == ACK:
                hi = mid
            elif answer == UNAVAILABLE:
                lo = mid
            else:
                break
        return hi

    # -- annotations ------------------------------------------------------------
    def position_at(self, t_host: float) -> float:
        """Stream position (samples) of host time ``t_host``, from the newest live batch."""
        if self._last_live is None or self._next is None:
            return float(self._pos)
        seq_end, t = self._last_live
        seq = seq_end + (t_host - t) * self.rate_hz
        return max(0.0, self._pos + (seq - self._next))

    def _annotate_now(self, text: str) -> None:
        pos = self.position_at(time.time())
        for sink in self.sinks:
            sink.annotate(pos, text)

    def annotate(self, text: str, t_host: float | None = None) -> None:
        """A scene change, a marker...: placed on the time axis at ``t_host`` (now by default)."""
        pos = self.position_at(time.time() if t_host is None else t_host)
        for sink in self.sinks:
            sink.annotate(pos, text)

    # -- state ------------------------------------------------------------------
    def to_json(self) -> dict:
        d = dict(vars(self.stats))  # flat ints: asdict's deep copy is not needed
        d["railed"] = self.railed
        d["near_railed"] = self.near_railed
        d["quality"] = self.quality.to_json()
        d["next_seq"] = None if self._next is None else self._next & 0xFFFFFFFF
        return d

    def close(self) -> None:
        """Hand on what is held (holes become gaps) and close the sinks."""
        if self._closed:
            return
        self._give_up_all("stream closed")
        self._closed = True
        for sink in self.sinks:
            try:
                sink.close()
            except Exception:  # noqa: BLE001  (one sink failing must not keep the others open)
                log.exception("pod %s: closing %s", self.pod_id, type(sink).__name__)
