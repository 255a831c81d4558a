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

Annotations wait in a queue and each record carries as many as its
annotation signal holds, in the order they came; the rest spill into the
following records (a TAL states its own onset, so it may sit in any record:
pyedflib and MNE read it there). An annotation too long for one record is
refused when queued, never cut. ``records_to_drain`` says how many more
records the queue needs, so a writer that ends can pad with enough of them.
``BdfWriter.append_to`` continues a file another process wrote (and was killed
while writing), to add the records that carry what its queue still held.
"""
from __future__ import annotations

import math
import os
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

DIGITAL_MAX = 8388607
DIGITAL_MIN = -8388607  # symmetric, so physical 0 is digital 0 and the scale is exact
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_N_RECORDS_OFFSET = 236
_PATIENT_OFFSET = 8
_RECORD_TAL_MAX = len("+99999999\x14\x14\x00")  # a record's own time-keeping TAL, up to ~3 years of records


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


def tal_item(onset_s: float, text: str, duration_s: float | None = None) -> bytes:
    """One annotation as a TAL: ``+onset[\\x15duration]\\x14text\\x14\\x00`` (UTF-8)."""
    if not math.isfinite(onset_s):
        raise BdfError(f"annotation {text[:40]!r}: onset {onset_s!r} is not a finite number")
    if duration_s is not None and not (math.isfinite(duration_s) and duration_s >= 0):
        raise BdfError(f"annotation {text[:40]!r}: duration {duration_s!r} is not a finite number >= 0")
    text = text.replace("\x14", " ").replace("\x15", " ").replace("\x00", " ")
    dur = f"\x15{duration_s:.4f}".rstrip("0").rstrip(".") if duration_s else ""
    return f"{_tal_time(max(0.0, onset_s))}{dur}\x14{text}\x14\x00".encode()


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
        self._data_bytes = 3 * self.per_record * len(self.signals)
        self._pending: deque[bytes] = deque()  # TALs waiting for a record, in order
        self.pending_bytes = 0
        self._header = self._make_header(patient, equipment)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        os.fchmod(self._fd, mode)  # exactly ``mode``, whatever the umask
        os.write(self._fd, self._header)

    @classmethod
    def append_to(cls, path: str | Path) -> BdfWriter:
        """A writer that adds records to a BDF+ file this class wrote: its header is read back,
        and a record cut short by a kill (after the last counted one) is dropped."""
        path = Path(path)
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            head = os.pread(fd, 256, 0)
            if len(head) < 256 or head[:8] != b"\xffBIOSEMI" or not head[192:236].startswith(b"BDF+"):
                raise BdfError(f"{path}: not a BDF+ file")
            ns = int(head[252:256])
            sig = os.pread(fd, 256 * ns, 256)
            labels = [sig[16 * i:16 * i + 16].decode("ascii").strip() for i in range(ns)]
            base = 216 * ns
            per = [int(sig[base + 8 * i:base + 8 * i + 8]) for i in range(ns)]
            if ns < 2 or labels[-1] != "BDF Annotations" or len(set(per[:-1])) != 1:
                raise BdfError(f"{path}: not a recording of this writer (signals {labels})")
            records, duration = int(head[_N_RECORDS_OFFSET:_N_RECORDS_OFFSET + 8]), int(head[244:252])
        except (ValueError, UnicodeDecodeError) as exc:
            os.close(fd)
            raise BdfError(f"{path}: unreadable BDF+ header: {exc}") from exc
        except BaseException:
            os.close(fd)
            raise
        self = cls.__new__(cls)
        self.path, self.signals = path, [Signal(label, -1, 1) for label in labels[:-1]]
        self.per_record, self.duration_s, self.records = per[0], duration, records
        self._ann_bytes, self._data_bytes = 3 * per[-1], 3 * per[0] * (ns - 1)
        self._pending, self.pending_bytes = deque(), 0
        self._fd = fd
        end = 256 * (ns + 1) + records * (self._data_bytes + self._ann_bytes)
        if os.fstat(fd).st_size < end:
            os.close(fd)
            raise BdfError(f"{path}: shorter than the {records} records its header counts")
        os.ftruncate(fd, end)
        os.lseek(fd, end, os.SEEK_SET)
        return self

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
    @property
    def max_item_bytes(self) -> int:
        """The longest TAL one record can carry (next to the record's own time-keeping TAL)."""
        return self._ann_bytes - _RECORD_TAL_MAX

    def annotate(self, onset_s: float, text: str, duration_s: float | None = None) -> int:
        """Queue an annotation for the next records; returns its size in bytes. Raises
        BdfError for a non-finite onset or duration, or one too long for any record."""
        item = tal_item(onset_s, text, duration_s)
        if len(item) > self.max_item_bytes:
            raise BdfError(f"annotation {text[:40]!r}: {len(item)} bytes, more than the {self.max_item_bytes} "
                           "a record's annotation signal holds")
        self._pending.append(item)
        self.pending_bytes += len(item)
        return len(item)

    def _record_tal(self, record: int) -> bytes:
        return f"{_tal_time(record * self.duration_s)}\x14\x14\x00".encode()

    def _room(self, record: int) -> int:
        """Bytes of record number ``record``'s annotation signal left for queued TALs."""
        return self._ann_bytes - len(self._record_tal(record))

    def _tal(self) -> tuple[bytes, int]:
        """This record's annotation signal, and how many queued annotations it carries."""
        out = bytearray(self._record_tal(self.records))
        room, n = self._room(self.records), 0
        while self._pending and len(self._pending[0]) <= room:
            item = self._pending.popleft()
            self.pending_bytes -= len(item)
            room -= len(item)
            out += item
            n += 1
        return bytes(out.ljust(self._ann_bytes, b"\x00")), n

    def records_to_drain(self, extra: bytes = b"") -> int:
        """How many more records the queued annotations (and ``extra``, a TAL not yet queued)
        need; 0 if none wait."""
        sizes = [len(item) for item in self._pending] + ([len(extra)] if extra else [])
        records = i = 0
        while i < len(sizes):
            room = self._room(self.records + records)
            if sizes[i] > room:
                raise BdfError(f"an annotation of {sizes[i]} bytes does not fit a record")
            while i < len(sizes) and sizes[i] <= room:
                room -= sizes[i]
                i += 1
            records += 1
        return records

    def write_record(self, digital: np.ndarray) -> int:
        """One whole record: ``digital`` is (per_record, signals), already within the digital range."""
        if digital.shape != (self.per_record, len(self.signals)):
            raise BdfError(f"record shape {digital.shape}, expected {(self.per_record, len(self.signals))}")
        le = np.ascontiguousarray(digital.T, dtype="<i4").view(np.uint8).reshape(len(self.signals), -1, 4)
        return self.write_record_bytes(le[:, :, :3].tobytes())

    def write_padding(self) -> int:
        """One record of zeros (an ended recording's last annotations)."""
        return self.write_record_bytes(bytes(self._data_bytes))

    def write_record_bytes(self, data: bytes) -> int:
        """One whole record of samples already laid out as BDF stores them (per signal, 24-bit LE);
        returns how many queued annotations went out with it."""
        if len(data) != self._data_bytes:
            raise BdfError(f"record of {len(data)} bytes, expected {self._data_bytes}")
        tal, n = self._tal()
        os.write(self._fd, data + tal)
        self.records += 1
        # the count is rewritten after every record, so a killed writer leaves a valid header
        os.pwrite(self._fd, _field(str(self.records), 8, "records"), _N_RECORDS_OFFSET)
        return n

    @property
    def annotations_pending(self) -> int:
        """How many annotations wait for a record."""
        return len(self._pending)

    def fsync(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
