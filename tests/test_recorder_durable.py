"""Durable annotations: every annotation the recorder takes reaches the file at its onset, the
queue is bounded (refusals counted and logged), a killed recorder's queue is written by the next
one, files are private whatever the umask, and pod ids cannot lead paths out of the directory.

The files are read back with pyedflib and MNE. End-to-end versions (markers over MQTT to a
running hostd) are at the end."""
from __future__ import annotations

import asyncio
import logging
import math
import os
import signal
import stat
from collections import Counter
from datetime import datetime

import mne
import pyedflib
import pytest

from hypnolum.host.bdf import BdfError, BdfWriter, Signal
from hypnolum.host.config import EegConfig
from hypnolum.host.eeg import EegStream
from hypnolum.host.annotation_journal import KILLED_NOTE
from hypnolum.host.recorder import AnnotationRefused, Recorder, RecorderError, read_resume

RATE, CH = 250, 2


def batch(first: int, n: int) -> bytes:
    """Wire bytes of samples first..first+n-1 (channel c of sample s: s * 2 + c, 24-bit big-endian)."""
    return b"".join(int((s * 2 + c) % 8388607).to_bytes(3, "big", signed=True)
                    for s in range(first, first + n) for c in range(CH))


def read_notes(path) -> list[tuple[float, float, str]]:
    with pyedflib.EdfReader(str(path)) as f:
        onsets, durations, texts = f.readAnnotations()
    return list(zip(onsets.tolist(), durations.tolist(), texts.tolist()))


def scene(k: int) -> str:
    return (f"scene: breathe brightness 0.{k % 10} color [{k % 256}, 120, 40] transition 500 ms "
            f"period {1000 + k} ms")


def marker(k: int) -> str:
    return f"marker: m{k} lights {'out' if k % 2 else 'on'} é✓"


async def test_ten_thousand_annotations_are_all_in_the_file_at_their_onsets(tmp_path):
    """Scenes and markers, paced and in bursts, through the real stream and recorder: each one
    is in the file once, at its onset, whether its record had room or it spilled into later
    records or into the records of zeros written when the recording closed."""
    rec = Recorder(tmp_path, "pod-a", CH, RATE)
    stream = EegStream("pod-a", CH, RATE, EegConfig(), [rec])
    stream.new_boot(1)
    want: list[tuple[float, str]] = []
    k = 0

    def note(text: str, at_sample: int) -> None:
        t = at_sample / RATE  # batches arrive stamped with their last sample's time: position = t * RATE
        rec.admit(text)
        stream.annotate(text, t)
        want.append((round(t, 4), text))

    step, seconds = 25, 1000  # batches of 0.1 s
    for i, first in enumerate(range(0, seconds * RATE, step)):
        stream.push(first, batch(first, step), 0, (first + step) / RATE)
        if first == 300 * RATE:
            for _ in range(500):  # a burst: ~50 KB, forty records' worth of annotation signal
                note(scene(k), first + k % step)
                k += 1
        elif i % 100 < 91:  # ~9 a second otherwise
            note(scene(k) if k % 3 else marker(k), first + (k * 7) % step)
            k += 1
    for _ in range(10_000 - k):  # a burst just before the end: still queued when the recording closes
        note(scene(k), seconds * RATE - 3)
        k += 1
    assert len(want) == 10_000 and rec.writer.annotations_pending > 300
    stream.close()
    assert not rec.refused and not rec.lost

    notes = read_notes(rec.path)
    got = Counter((round(o, 4), t) for o, _, t in notes if t.startswith(("scene:", "marker:")))
    assert got == Counter(want)  # every one, once, at its onset
    end = [(o, d) for o, d, t in notes if t == "end of data"]
    with pyedflib.EdfReader(str(rec.path)) as f:
        records, data = f.datarecords_in_file, f.readSignal(0, digital=True)
    assert end == [(seconds, records - seconds)] and records > seconds + 1  # the queue needed records of zeros
    assert data[:seconds * RATE].tolist() == [s * 2 for s in range(seconds * RATE)] and not data[seconds * RATE:].any()
    raw = mne.io.read_raw_bdf(rec.path, verbose="error")  # an independent reader agrees
    mne_got = Counter((round(o, 4), d) for o, d in zip(raw.annotations.onset, raw.annotations.description)
                      if d.startswith(("scene:", "marker:")))
    assert mne_got == Counter(want)


def test_annotations_queued_at_close_are_written_in_records_of_zeros_inside_end_of_data(tmp_path):
    rate = 10
    rec = Recorder(tmp_path, "pod-a", 1, rate, annotation_bytes=120)
    rec.samples(0, b"\x00\x00\x07" * 13, 13, 0, 0, 0.0)  # one record and 3 samples
    texts = [f"marker: number {i}" for i in range(20)]  # ~30 bytes each: 3 a record
    for i, text in enumerate(texts):
        rec.admit(text)
        rec.annotate(i / 10, text)
    rec.close()
    notes = read_notes(rec.path)
    assert [t for _, _, t in notes if t.startswith("marker")] == texts
    assert [(o, t) for o, _, t in notes if t.startswith("marker")] == [(i / 100, t) for i, t in enumerate(texts)]
    (end,) = [(o, d) for o, d, t in notes if t == "end of data"]
    with pyedflib.EdfReader(str(rec.path)) as f:
        records = f.datarecords_in_file
        data = f.readSignal(0, digital=True)
    assert records >= 7 and end == (1.3, pytest.approx(records - 1.3))  # from the last sample to the file's end
    assert data.tolist() == [7] * 13 + [0] * (records * rate - 13)


def test_the_queue_is_bounded_refusals_are_counted_and_logged_once_per_kind(tmp_path, caplog):
    rec = Recorder(tmp_path, "pod-a", 1, 10, annotation_bytes=300, max_pending_s=2)  # 600 bytes of markers
    accepted = []
    refusals = 0
    with caplog.at_level(logging.WARNING, logger="hypnolum.host.recorder"):
        for i in range(100):
            text = f"marker: {i:03d} " + "x" * 40
            try:
                rec.admit(text)
            except AnnotationRefused as exc:
                refusals += 1
                assert "wait for the next records" in str(exc) and rec.path.name in str(exc)
                continue
            rec.annotate(i, text)
            accepted.append(text)
        for i in range(30):  # scene changes are counted apart
            with pytest.raises(AnnotationRefused):
                rec.admit(scene(i))
        assert rec.writer.pending_bytes <= rec.max_pending
        # the stream's own annotations may use the reserve, and past it are counted and logged as lost
        for i in range(200):
            rec.gap(0, 1, False, f"test {i}")
    assert 8 <= len(accepted) <= 11 and refusals == 100 - len(accepted)
    assert rec.refused == {"marker": refusals, "scene": 30}
    assert rec.writer.pending_bytes <= rec.max_pending + rec.reserve and rec.lost["gap"] > 0
    lines = [r.getMessage() for r in caplog.records]
    assert len([m for m in lines if "marker annotation(s) refused" in m]) == 1  # once per kind, not per refusal
    assert len([m for m in lines if "scene annotation(s) refused" in m]) == 1
    assert len([m for m in lines if "gap annotation(s) not written" in m]) == 1
    rec.close()
    texts = [t for _, _, t in read_notes(rec.path)]
    assert [t for t in texts if t.startswith("marker")] == accepted  # everything taken is in the file
    assert len([t for t in texts if t.startswith("gap")]) == 200 - rec.lost["gap"]


def test_non_finite_onsets_are_refused_never_placed_at_zero(tmp_path):
    w = BdfWriter(tmp_path / "a.bdf", [Signal("A", -1, 1)], 10, start=datetime(2026, 1, 1))
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(BdfError, match="onset"):
            w.annotate(bad, "marker: x")
    assert not w.annotations_pending
    w.close()
    rec = Recorder(tmp_path / "r", "pod-a", 1, 10)
    rec.annotate(math.nan, "marker: nan")
    assert rec.lost == {"marker": 1} and not rec.writer.annotations_pending


def test_a_killed_recorders_queued_annotations_are_written_into_its_file_by_the_next_one(tmp_path):
    rate = 10
    old = Recorder(tmp_path, "pod-a", 1, rate, annotation_bytes=120)
    old.boot_id = 5
    old.samples(0, b"\x00\x00\x01" * 25, 25, 0, 0, 100.0)  # two records, and 5 samples in the buffer
    old.annotate(0.5, "marker: in the first record")
    old.samples(25, b"\x00\x00\x02" * 10, 10, 25, 0, 101.0)  # a third record: carries it
    for i in range(9):
        old.admit(f"marker: queued {i}")
        old.annotate(30 + i, f"marker: queued {i}")
    assert old.writer.annotations_pending == 9  # hostd is killed now: only the journal has them
    assert stat.S_IMODE(os.stat(tmp_path / ".pod-a.annotations").st_mode) == 0o600
    records_before = old.writer.records
    os.close(old.writer._fd)  # what a kill leaves: the file and the journal as they are on disk
    os.close(old.journal._fd)

    new = Recorder(tmp_path, "pod-a", 1, rate)
    assert new.path != old.path and not (tmp_path / f"{old.path.name}.annotations").exists()
    notes = read_notes(old.path)
    texts = [t for _, _, t in notes]
    assert texts.count("marker: in the first record") == 1  # not written twice
    assert [(o, t) for o, _, t in notes if t.startswith("marker: queued")] == [
        (pytest.approx(3.0 + i / 10), f"marker: queued {i}") for i in range(9)]
    with pyedflib.EdfReader(str(old.path)) as f:
        records = f.datarecords_in_file
        data = f.readSignal(0, digital=True)
    (end,) = [(o, d) for o, d, t in notes if t == "end of data"]
    assert end == (float(records_before), records - records_before)
    assert (records_before, KILLED_NOTE) in [(o, t) for o, _, t in notes]
    assert data.tolist() == [1] * 25 + [2] * 5 + [0] * (len(data) - 30)  # its samples untouched
    assert read_resume(tmp_path, "pod-a").next_seq == 30  # the new recording starts where the old one ended
    new.close()


def test_a_journal_whose_file_is_gone_is_kept_aside_and_the_next_recording_starts(tmp_path, caplog):
    old = Recorder(tmp_path, "pod-a", 1, 10)
    old.annotate(0.5, "marker: kept")
    os.close(old.writer._fd)  # killed, and then its file is removed
    os.close(old.journal._fd)
    old.path.unlink()
    with caplog.at_level(logging.ERROR, logger="hypnolum.host.recorder"):
        new = Recorder(tmp_path, "pod-a", 1, 10)
    (kept,) = tmp_path.glob(".pod-a.annotations.*.unwritten")
    assert '"text": "marker: kept"' in kept.read_text() and stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert any(str(kept) in r.getMessage() and old.path.name in r.getMessage() for r in caplog.records)
    new.annotate(0.1, "marker: new")
    new.close()
    assert [t for _, _, t in read_notes(new.path)] == ["marker: new", "end of data"]


def test_files_and_directories_are_private_whatever_the_umask(tmp_path):
    where = tmp_path / "state" / "hypnolum" / "rec"
    old = os.umask(0)
    try:
        rec = Recorder(where, "pod-a", 1, 10)
        rec.boot_id = 1
        rec.samples(0, b"\x00\x00\x01" * 10, 10, 0, 0, 0.0)  # a record: the resume note is written
        rec.annotate(0.1, "marker: x")
        assert stat.S_IMODE((where / ".pod-a.resume.json").stat().st_mode) == 0o600
        assert stat.S_IMODE((where / ".pod-a.annotations").stat().st_mode) == 0o600
        rec.close()
    finally:
        os.umask(old)
    for d in (tmp_path / "state", tmp_path / "state" / "hypnolum", where):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    files = list(where.iterdir())
    assert {f.name for f in files} == {rec.path.name, ".pod-a.resume.json"}
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files), [(f, oct(f.stat().st_mode)) for f in files]


def test_pod_ids_that_would_leave_the_directory_are_refused(tmp_path):
    rec_dir = tmp_path / "a" / "b" / "c" / "rec"
    for bad in ("../../../tmp/x", "../x", "x/../../y", "sub/x"):
        with pytest.raises(RecorderError, match="refusing"):
            Recorder(rec_dir, bad, 1, 10)
        with pytest.raises(RecorderError, match="refusing"):
            read_resume(rec_dir, bad)
    made = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert made == ["a", "a/b", "a/b/c", "a/b/c/rec"], made  # nothing outside, nothing inside


# -- end to end: markers over MQTT to a running hostd -----------------------------------------------
P = "hypnolum/v1/pods"


def _hostd(tmp_path, port):
    from helpers.hostd import Hostd

    rec = tmp_path / "rec"
    h = Hostd(tmp_path, port, extra=f'stop_fade_ms = 0\n[recorder]\nenabled = true\ndir = "{rec}"\n'
                                    "[eeg]\npublish_interval_s = 0.1\n")
    h.rec = rec
    h.start()
    return h


@pytest.mark.broker
async def test_every_acknowledged_marker_of_a_burst_is_in_the_file(tmp_path, mosquitto):
    from helpers.fake_pod import FakePod
    from helpers.mqtt_watch import Watcher
    from helpers.wait import wait_until

    n = 500
    texts = [f"{i:05d} " + "x" * 194 for i in range(n)]  # 200 characters: ~330 fill the queue
    async with Watcher(mosquitto.port) as watch:
        h = _hostd(tmp_path, mosquitto.port)
        pod = FakePod(h.pods_dir / "a.tty", pod_id="pod-a")
        pod.plug()
        try:
            await wait_until(lambda: ((watch.json(f"{P}/pod-a/state") or {}).get("eeg") or {}).get("samples", 0) > 50,
                             timeout=15, what="streaming")
            for text in texts:
                await watch.publish(f"{P}/pod-a/marker", {"text": text})
            results = await wait_until(lambda: len(r := watch.all_json(f"{P}/pod-a/marker/result")) >= n and r,
                                       timeout=60, what="every marker answered")
            h.proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(h.proc.wait, 20) == 0
        finally:
            h.kill()
            pod.close()
    ok = [t for t, r in zip(texts, results) if r["ok"]]
    refused = [r for r in results if not r["ok"]]
    assert len(results) == n and ok and refused
    assert all(r["busy"] and "try again later" in r["error"] for r in refused), refused[:3]
    (path,) = h.rec.glob("*.bdf")
    in_file = [t.removeprefix("marker: ") for _, _, t in read_notes(path) if t.startswith("marker: ")]
    assert in_file == ok  # every acknowledged marker, in order; none that was refused
    assert h.log_text().count("marker annotation(s) refused") == 1
    assert "Traceback" not in h.log_text()


@pytest.mark.broker
async def test_a_marker_acknowledged_just_before_a_kill_is_in_the_file(tmp_path, mosquitto):
    from helpers.fake_pod import FakePod
    from helpers.mqtt_watch import Watcher
    from helpers.wait import wait_until

    async with Watcher(mosquitto.port) as watch:
        h = _hostd(tmp_path, mosquitto.port)
        pod = FakePod(h.pods_dir / "a.tty", pod_id="pod-a")
        pod.plug()
        try:
            await wait_until(lambda: (((watch.json(f"{P}/pod-a/state") or {}).get("eeg") or {}).get("recording")
                                      or {}).get("seconds", 0) >= 1, timeout=15, what="a record on disk")
            pod.stop_eeg()  # no record is written after this: the marker stays queued until the kill
            await asyncio.sleep(0.3)
            await watch.publish(f"{P}/pod-a/marker", {"text": "before the kill"})
            await wait_until(lambda: watch.json(f"{P}/pod-a/marker/result") == {"ok": True}, what="marker accepted")
            h.proc.send_signal(signal.SIGKILL)
            h.proc.wait()
            (killed,) = h.rec.glob("*.bdf")
            assert "marker: before the kill" not in [t for _, _, t in read_notes(killed)]
            h.start()  # the next hostd meets the pod and writes the killed one's queue into its file
            await wait_until(lambda: len(list(h.rec.glob("*.bdf"))) == 2, timeout=15, what="a new recording")
            h.proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(h.proc.wait, 20) == 0
        finally:
            h.kill()
            pod.close()
    notes = read_notes(killed)
    assert [t for _, _, t in notes].count("marker: before the kill") == 1
    assert KILLED_NOTE in [t for _, _, t in notes] and "end of data" in [t for _, _, t in notes]
    assert "Traceback" not in h.log_text()
