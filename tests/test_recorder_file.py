"""Recorder and BDF+ writer on their own: layout, clipping, padding, header fields, annotations."""
from __future__ import annotations

import stat
from datetime import datetime, timezone

import mne
import numpy as np
import pyedflib
import pytest

from hypnolum.host.bdf import BdfError, BdfWriter, Signal
from hypnolum.host.recorder import Recorder

RATE, CH = 10, 3


def wire(rows: list[list[int]]) -> bytes:
    return b"".join(int(v).to_bytes(3, "big", signed=True) for row in rows for v in row)


def test_counts_go_in_exactly_and_the_one_out_of_range_value_is_clipped(tmp_path):
    rec = Recorder(tmp_path / "r", "pod-x", CH, RATE, participant="P9", start=datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc))
    rows = [[i, -i * 1000, 8388607 if i == 3 else i] for i in range(25)]
    rows[7][1] = -8388608  # full-scale negative: one below the symmetric digital range
    rec.samples(0, wire(rows[:12]), 12, 0, 0, 0.0)
    rec.gap(12, 5, True, "test")  # 5 zeros
    rec.samples(17, wire(rows[12:]), 13, 12, 0, 0.0)
    rec.gap(30, 10**6, False, "long")  # annotated only
    rec.annotate(2.5, "marker: x")
    rec.close()
    assert rec.clipped == 1
    path = rec.path
    assert path.name == "pod-x_20260102T030405Z.bdf" and stat.S_IMODE(path.stat().st_mode) == 0o600
    with pyedflib.EdfReader(str(path)) as f:
        assert f.getPatientCode() == "P9" and f.getStartdatetime() == datetime(2026, 1, 2, 3, 4, 5)
        assert f.datarecords_in_file == 4  # 30 samples + the padded last record
        got = np.array([f.readSignal(c, digital=True) for c in range(CH)]).T
        onsets, durations, texts = f.readAnnotations()
    want = np.array(rows[:12] + [[0] * CH] * 5 + rows[12:] + [[0] * CH] * 10)
    want[7][1] = -8388607
    assert got.tolist() == want.tolist()
    notes = dict(zip(texts, zip(onsets, durations)))
    assert notes["gap: 5 samples lost (test)"] == (1.2, 0.5)
    assert notes["gap: 1000000 samples lost (long), not on the time axis"][0] == 3.0
    assert notes["marker: x"][0] == 0.25
    assert notes["end of data"] == (3.0, 1.0)
    raw = mne.io.read_raw_bdf(path, preload=True, verbose="error")
    assert raw.get_data()[2, 3] * 1e6 == pytest.approx(187500.0)  # 8388607 counts = +full scale


def test_participant_code_is_rewritten_in_place(tmp_path):
    rec = Recorder(tmp_path, "p", 1, RATE, participant="X")
    rec.samples(0, wire([[1]] * RATE), RATE, 0, 0, 0.0)
    rec.set_participant("P-042")
    rec.samples(RATE, wire([[2]] * RATE), RATE, RATE, 0, 0.0)
    rec.close()
    with pyedflib.EdfReader(str(rec.path)) as f:
        assert f.getPatientCode() == "P-042" and f.datarecords_in_file == 2


def test_long_annotations_spill_into_later_records(tmp_path):
    w = BdfWriter(tmp_path / "a.bdf", [Signal("A", -1000, 1000)], RATE, start=datetime(2026, 1, 1), annotation_bytes=60)
    for i in range(4):
        w.annotate(0.1 * i, f"note number {i}")
    for _ in range(4):
        w.write_record(np.zeros((RATE, 1), np.int32))
    w.close()
    with pyedflib.EdfReader(str(tmp_path / "a.bdf")) as f:
        assert list(f.readAnnotations()[2]) == [f"note number {i}" for i in range(4)]


def test_header_fields_that_do_not_fit_are_refused(tmp_path):
    with pytest.raises(BdfError, match="label"):
        BdfWriter(tmp_path / "b.bdf", [Signal("a label that is too long", -1, 1)], RATE, start=datetime(2026, 1, 1))
    with pytest.raises(BdfError, match="physical min"):
        BdfWriter(tmp_path / "c.bdf", [Signal("A", -187500.12345, 1)], RATE, start=datetime(2026, 1, 1))


def test_recorder_notes_the_sequence_it_reached_and_keeps_the_note_when_closed(tmp_path):
    from hypnolum.host.recorder import read_resume

    def note():
        n = read_resume(tmp_path / "r", "pod-x")
        return n and (n.boot_id, n.next_seq, n.closed)

    rec = Recorder(tmp_path / "r", "pod-x", CH, RATE)
    rec.boot_id = 0xABC
    rows = [[i, i, i] for i in range(40)]
    rec.samples(0, wire(rows[:8]), 8, 2**32 - 4, 0, 0.0)  # wraps
    assert note() is None  # no whole record yet
    rec.samples(8, wire(rows[8:15]), 7, 4, 0, 0.0)
    assert note() == (0xABC, 6, False)  # the first record ends before seq 6
    rec.gap(15, 3, True, "test")  # padding keeps sequence and time axis together
    rec.samples(18, wire(rows[15:20]), 5, 14, 0, 0.0)
    assert note() == (0xABC, 16, False)
    rec.close()
    # closed in order: the note stays, at the sample after the last one in the file, so the next
    # recording starts there and the pod's ring replays what came meanwhile
    assert note() == (0xABC, 19, True)
