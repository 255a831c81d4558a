"""A BDF+ (24-bit EDF+) writer that survives being killed.

Why not pyedflib's writer: edflib buffers records in stdio, keeps every
annotation in memory until ``close()`` and leaves the header's record count
at -1 until then, so a SIGKILL loses the annotations and up to a buffer of
samples. Here every data record goes to the file with one ``os.write`` (no
user-space buffer), carries its own annotations in its "BDF Annotations"
signal, and is followed by a rewrite of the header's record count: after a
kill the file is a complete, valid BDF+ up to the last record written.
pyedflib and MNE read the result (tests/test_recorder.py checks both).

Layout (EDF+ spec, 24-bit little-endian samples for BDF): a 256-byte fixed
header, 256 bytes per signal, then records of ``duration_s`` seconds: each
signal's samples in turn, the annotation signal last.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

DIGITAL_MAX = 8388607
DIGITAL_MIN = -8388607  # symmetric, so physical 0 is digital 0 and the scale is exact
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_N_RECORDS_OFFSET = 236
_PATIENT_OFFSET = 8


class BdfError(ValueError):
    """A header field that does not fit BDF+ (the message names the field)."""


@dataclass(frozen=True)
class Signal:
    label: str
    physical_min: int  # integers: the 8-character header field keeps them exact
    physical_max: int
    unit: str = "uV"
    transducer: str = ""
    prefilter: str = ""


def _field(value: str, width: int, what: str) -> bytes:
    data = value.encode("ascii", "replace")
    if len(data) > width:
        raise BdfError(f"{what}: {value!r} is longer than {width} characters")
    return data.ljust(width, b" ")


def _sub(value: str) -> str:
    """A BDF+ header subfield: no spaces inside, 'X' when unknown."""
    return value.replace(" ", "_") or "X"


def _tal_time(seconds: float) -> str:
    text = f"{seconds:+.4f}".rstrip("0").rstrip(".")
    return text


class BdfWriter:
    """Writes one BDF+C file; ``write(samples)`` takes digital values (n, signals)."""

    def __init__(self, path: str | Path, signals: list[Signal], rate_hz: int, *, start: datetime,
                 patient: str = "X", equipment: str = "hypnolum", duration_s: int = 1,
                 annotation_bytes: int = 600, mode: int = 0o600):
        if annotation_bytes % 3:
            raise BdfError("annotation_bytes must be a multiple of 3 (24-bit samples)")
        self.path = Path(path)
        self.signals = list(signals)
        self.per_record = rate_hz * duration_s
        self.duration_s = duration_s
        self.records = 0
        self._start = start
        self._ann_bytes = annotation_bytes
        self._pending_ann: list[tuple[float, float | None, str]] = []
        self._header = self._make_header(patient, equipment)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        os.write(self._fd, self._header)

    # -- header -------------------------------------------------------------
    def _patient_field(self, patient: str) -> bytes:
        # code, sex, birthdate, name: only the pseudonymous code is ever filled in
        return _field(f"{_sub(patient)} X X X", 80, "patient")

    def _make_header(self, patient: str, equipment: str) -> bytes:
        s = self._start
        ns = len(self.signals) + 1
        date = f"{s.day:02d}-{_MONTHS[s.month - 1]}-{s.year}"
        head = b"\xffBIOSEMI"
        head += self._patient_field(patient)
        head += _field(f"Startdate {date} X X {_sub(equipment)}", 80, "recording")
        head += _field(s.strftime("%d.%m.%y"), 8, "startdate") + _field(s.strftime("%H.%M.%S"), 8, "starttime")
        head += _field(str(256 * (ns + 1)), 8, "header bytes") + _field("BDF+C", 44, "reserved")
        head += _field("0", 8, "records") + _field(str(self.duration_s), 8, "duration") + _field(str(ns), 4, "signals")
        ann = Signal("BDF Annotations", -1, 1, unit="")
        sigs = self.signals + [ann]
        per = [self.per_record] * len(self.signals) + [self._ann_bytes // 3]
        head += b"".join(_field(x.label, 16, "label") for x in sigs)
        head += b"".join(_field(x.transducer, 80, "transducer") for x in sigs)
        head += b"".join(_field(x.unit, 8, "unit") for x in sigs)
        head += b"".join(_field(str(x.physical_min), 8, "physical min") for x in sigs)
        head += b"".join(_field(str(x.physical_max), 8, "physical max") for x in sigs)
        head += b"".join(_field(str(DIGITAL_MIN if x is not ann else -8388608), 8, "digital min") for x in sigs)
        head += b"".join(_field(str(DIGITAL_MAX), 8, "digital max") for x in sigs)
        head += b"".join(_field(x.prefilter, 80, "prefilter") for x in sigs)
        head += b"".join(_field(str(n), 8, "samples per record") for n in per)
        head += b" " * 32 * len(sigs)
        assert len(head) == 256 * (ns + 1)
        return head

    def set_patient(self, patient: str) -> None:
        """Rewrite the pseudonymous participant code in place (the field has a fixed width)."""
        os.pwrite(self._fd, self._patient_field(patient), _PATIENT_OFFSET)

    # -- data ---------------------------------------------------------------
    def annotate(self, onset_s: float, text: str, duration_s: float | None = None) -> None:
        """Queue an annotation; it goes out with the next record written."""
        text = text.replace("\x14", " ").replace("\x15", " ").replace("\x00", " ")
        self._pending_ann.append((max(0.0, onset_s), duration_s, text))

    def _tal(self) -> bytes:
        t = self.records * self.duration_s
        out = bytearray(f"{_tal_time(t)}\x14\x14\x00".encode())
        while self._pending_ann:
            onset, dur, text = self._pending_ann[0]
            item = _tal_time(onset) + (f"\x15{dur:.4f}".rstrip("0").rstrip(".") if dur else "") + f"\x14{text}\x14\x00"
            item_b = item.encode("utf-8")
            if len(out) + len(item_b) > self._ann_bytes:
                if len(out) > 8:
                    break  # the rest goes into the next record
                item_b = item_b[: self._ann_bytes - len(out) - 2] + b"\x14\x00"  # too long for any record: cut
            out += item_b
            self._pending_ann.pop(0)
        return bytes(out.ljust(self._ann_bytes, b"\x00"))

    def write_record(self, digital: np.ndarray) -> None:
        """One whole record: ``digital`` is (per_record, signals), already within the digital range."""
        if digital.shape != (self.per_record, len(self.signals)):
            raise BdfError(f"record shape {digital.shape}, expected {(self.per_record, len(self.signals))}")
        le = np.ascontiguousarray(digital.T, dtype="<i4").view(np.uint8).reshape(len(self.signals), -1, 4)
        self.write_record_bytes(le[:, :, :3].tobytes())

    def write_record_bytes(self, data: bytes) -> None:
        """One whole record of samples already laid out as BDF stores them (per signal, 24-bit LE)."""
        if len(data) != 3 * self.per_record * len(self.signals):
            raise BdfError(f"record of {len(data)} bytes, expected {3 * self.per_record * len(self.signals)}")
        os.write(self._fd, data + self._tal())
        self.records += 1
        # the count is rewritten after every record, so a killed writer leaves a valid header
        os.pwrite(self._fd, _field(str(self.records), 8, "records"), _N_RECORDS_OFFSET)

    @property
    def annotations_pending(self) -> bool:
        """Whether annotations still wait for a record."""
        return bool(self._pending_ann)

    def fsync(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
