"""EegStream: sequence order, replay of holes, unfilled gaps, duplicates, wrap-around, reboots.

The stream's only way out to the pod is its ``request`` callable (an eeg_replay
command); here a small scripted pod answers it, and a sink records what the
stream hands on. End-to-end versions on ptys and mosquitto are in test_recorder.py.
"""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from hypnolum.host.config import EegConfig
from hypnolum.host.eeg import ACK, UNAVAILABLE, EegStream
from hypnolum.protocol import codec

from helpers.wait import wait_until

CH = 2


def counts(first: int, n: int = 5) -> np.ndarray:
    return np.array([[(first + i) * 10 + c for c in range(CH)] for i in range(n)], dtype=np.int32)


def batch(first: int, n: int = 5) -> bytes:
    """Wire bytes of samples first..first+n-1: 24-bit big-endian counts."""
    return b"".join(int(v).to_bytes(3, "big", signed=True) for v in counts(first, n).ravel())


class Sink:
    def __init__(self):
        self.rows: list[np.ndarray] = []
        self.seqs: list[int] = []
        self.gaps: list[tuple[int, int, bool, str]] = []
        self.notes: list[tuple[float, str]] = []
        self.closed = False

    def samples(self, pos, raw, n, seq, ticks_ms, t_host):
        assert pos == sum(len(r) for r in self.rows) + sum(g[1] for g in self.gaps if g[2])
        rows = codec.eeg_counts({"samples": raw, "channels": CH})
        assert len(rows) == n
        self.rows.append(rows)
        self.seqs.extend((seq + i) & 0xFFFFFFFF for i in range(n))

    def gap(self, pos, lost, padded, reason):
        self.gaps.append((pos, lost, padded, reason))

    def annotate(self, pos, text):
        self.notes.append((pos, text))

    def close(self):
        self.closed = True


class Pod:
    """Answers replay requests from its ring of sent-or-not batches."""

    def __init__(self, stream: EegStream, ring_from: int = 0):
        self.stream, self.ring_from, self.asked = stream, ring_from, []

    async def request(self, from_seq, count):
        self.asked.append((from_seq, count))
        if from_seq < self.ring_from:
            return UNAVAILABLE
        asyncio.get_running_loop().call_later(0.01, self._send, from_seq, count)
        return ACK

    def _send(self, from_seq, count):
        for s in range(from_seq, from_seq + count, 4):
            self.stream.push(s, batch(s, min(4, from_seq + count - s)), s * 4, 0.0, replay=True)


def make(**cfg):
    sink = Sink()
    stream = EegStream("pod-t", CH, 250, EegConfig(**cfg), [sink])
    pod = Pod(stream)
    stream.request = pod.request
    return stream, sink, pod


async def test_hole_is_replayed_and_merged_in_order():
    stream, sink, pod = make()
    stream.push(0, batch(0), 0, 0.0)
    stream.push(20, batch(20), 80, 0.0)  # 5..19 missing
    stream.push(25, batch(25), 100, 0.0)
    await wait_until(lambda: stream.stats.samples == 30, what="hole filled")
    assert sink.seqs == list(range(30))
    assert np.array_equal(np.concatenate(sink.rows), counts(0, 30))
    assert pod.asked == [(5, 15)]
    s = stream.stats
    assert (s.gaps_filled, s.gaps_unfilled, s.samples_lost, s.samples_replayed, s.held) == (1, 0, 0, 15, 0)


async def test_unavailable_range_becomes_a_padded_counted_gap():
    stream, sink, pod = make()
    pod.ring_from = 100
    stream.push(0, batch(0), 0, 0.0)
    stream.push(50, batch(50), 200, 0.0)
    await wait_until(lambda: stream.stats.gaps_unfilled == 1, what="gap given up")
    assert sink.gaps == [(5, 45, True, "pod cannot replay")]
    assert sink.seqs == list(range(5)) + list(range(50, 55))
    assert stream.stats.samples_lost == 45


async def test_long_gap_is_annotated_but_not_padded():
    stream, sink, pod = make(max_pad_s=0.1)  # 25 samples
    pod.ring_from = 10**6
    stream.push(0, batch(0), 0, 0.0)
    stream.push(100, batch(100), 0, 0.0)
    await wait_until(lambda: sink.gaps, what="gap")
    assert sink.gaps == [(5, 95, False, "pod cannot replay")]


async def test_duplicates_and_overlaps_are_dropped():
    stream, sink, _ = make()
    stream.push(0, batch(0, 10), 0, 0.0)
    stream.push(5, batch(5, 10), 0, 0.0, replay=True)  # 5..9 again, 10..14 new
    stream.push(0, batch(0, 5), 0, 0.0)
    assert sink.seqs == list(range(15))
    assert stream.stats.duplicates == 10


async def test_silent_pod_replay_times_out_and_live_data_is_not_lost():
    stream, sink, pod = make(replay_timeout_s=0.1)

    async def ack_but_send_nothing(from_seq, count):
        return ACK

    stream.request = ack_but_send_nothing
    stream.push(0, batch(0), 0, 0.0)
    stream.push(10, batch(10), 0, 0.0)
    assert sink.seqs == list(range(5))  # held back
    await wait_until(lambda: stream.stats.gaps_unfilled == 1, timeout=10, what="timeout")
    assert sink.seqs == list(range(5)) + list(range(10, 15))
    assert sink.gaps[0][3] == "replay incomplete"


async def test_reorder_buffer_is_bounded():
    stream, sink, _ = make(reorder_limit_s=0.1)  # 25 samples

    async def never(from_seq, count):
        await asyncio.sleep(10)

    stream.request = never
    stream.push(0, batch(0), 0, 0.0)
    for s in range(10, 60, 5):
        stream.push(s, batch(s), 0, 0.0)
    assert stream.stats.held <= 25
    assert sink.gaps[0][:2] == (5, 5) and sink.gaps[0][3] == "reorder buffer full"
    assert sink.seqs[-1] >= 30
    stream.close()


async def test_sequence_wraps_at_2_32():
    stream, sink, _ = make()
    top = 2**32 - 5
    stream.push(top, batch(0), 0, 0.0)
    stream.push(0, batch(0), 0, 0.0)
    assert sink.seqs == [top + i for i in range(5)] + list(range(5))
    assert stream.stats.gaps_unfilled == 0 and stream.stats.samples == 10


async def test_reboot_is_a_discontinuity_and_close_closes_sinks():
    stream, sink, _ = make()
    stream.new_boot(1)
    stream.push(1000, batch(1000), 0, 0.0)
    stream.new_boot(2)
    stream.push(0, batch(0), 0, 0.0)
    assert sink.seqs == list(range(1000, 1005)) + list(range(5))
    assert stream.stats.discontinuities == 1
    assert any("pod rebooted" in text for _, text in sink.notes)
    stream.close()
    assert sink.closed
    stream.push(5, batch(5), 0, 0.0)  # after close: ignored
    assert len(sink.seqs) == 10


async def test_replayed_batch_lost_on_the_wire_is_asked_for_again():
    stream, sink, pod = make()
    lost_once = []

    def send_but_lose_one(from_seq, count):  # the second replayed batch is hit by a bit error, once
        for s in range(from_seq, from_seq + count, 4):
            if s == from_seq + 4 and not lost_once:
                lost_once.append(s)
                continue
            stream.push(s, batch(s, min(4, from_seq + count - s)), s * 4, 0.0, replay=True)

    pod._send = send_but_lose_one
    stream.push(0, batch(0), 0, 0.0)
    stream.push(20, batch(20), 0, 0.0)  # 5..19 missing
    await asyncio.sleep(0.05)
    for s in range(25, 60, 5):  # the live stream goes on: the lost replayed batch is noticed
        stream.push(s, batch(s), 0, 0.0)
        await asyncio.sleep(0.005)
    await wait_until(lambda: stream.stats.held == 0, timeout=2, what="hole filled")
    assert sink.seqs == list(range(60))
    assert pod.asked == [(5, 15), (9, 4)] and lost_once == [9]  # only what is still missing
    assert stream.stats.gaps_unfilled == 0 and stream.stats.samples_lost == 0


async def test_reboot_loss_is_estimated_from_the_host_clock_counted_and_padded():
    stream, sink, _ = make()
    stream.new_boot(1)
    stream.push(1000, batch(1000), 0, 100.0)  # received when its last sample was taken
    stream.new_boot(2)
    stream.push(0, batch(0), 0, 100.5)  # 0.5 s later: 125 sample periods, 5 of them this batch's
    assert stream.stats.samples_lost == 120 and stream.stats.gaps_unfilled == 1
    assert sink.gaps == [(5, 120, True, "pod rebooted, count estimated from the host clock")]
    assert sink.seqs == list(range(1000, 1005)) + list(range(5))
    starts = [(pos, text) for pos, text in sink.notes if text.startswith("stream: seq 0 ")]
    assert [pos for pos, _ in starts] == [125.0]  # the new sequence after the padding


async def test_resumed_stream_asks_for_what_a_killed_hostd_did_not_record():
    stream, sink, pod = make()
    pod.ring_from = 100
    stream.new_boot(7)
    stream.resume_at(90)  # the killed hostd's file ended at 90; the pod's ring starts at 100
    stream.push(120, batch(120), 0, 0.0)
    await wait_until(lambda: stream.stats.held == 0, timeout=2, what="resumed")
    assert pod.asked[0] == (90, 30)
    # the ring's oldest samples are about to go on a live pod: asked for from 1/20 s later
    assert sink.gaps == [(0, 10 + 250 // 20, True, "pod cannot replay")]
    assert sink.notes[0] == (0.0, "stream: seq 90 (pod pod-t boot 00000007)")  # the file starts where the old one ended
    assert sink.seqs == list(range(112, 125)) and stream.stats.samples_lost == 22


async def test_a_pod_still_busy_replaying_is_waited_for_not_given_up():
    from hypnolum.host.eeg import BUSY

    stream, sink, pod = make()
    answers = [BUSY] * 6  # a slow link: the pod is still sending an earlier replay

    async def slow(from_seq, count):
        return answers.pop() if answers else await pod.request(from_seq, count)

    stream.request = slow
    stream.push(0, batch(0), 0, 0.0)
    stream.push(10, batch(10), 0, 0.0)
    await wait_until(lambda: stream.stats.held == 0, timeout=2, what="hole filled")
    assert sink.seqs == list(range(15)) and stream.stats.gaps_unfilled == 0 and stream.stats.gaps_filled == 1
