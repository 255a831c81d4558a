"""A recording as hostd's recorder writes it (docs/mqtt.md, "Recorder"): its header, its EEG
channels in µV one at a time, and its annotations.

The header is checked before pyedflib reads the file, so a file that is not a BDF+, is cut
short or holds no record is refused with what is wrong and where. Bytes after the last whole
record (a recorder killed mid-record) are left out and noted. The participant is shown only
by the pseudonymous code in the header's patient field; its other subfields are never read.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyedflib

from .errors import ReportError

BDF_MAGIC = b"\xffBIOSEMI"
ANNOTATION_LABEL = "BDF Annotations"
_FILE_NAME = re.compile(r"^(?P<pod>.+)_\d{8}T\d{6}Z(?:-\d+)?\.bdf$")
_STREAM = re.compile(r"^stream: seq \d+ \(pod (?P<pod>\S+) boot ")


@dataclass(frozen=True)
class Annotation:
    onset_s: float
    duration_s: float | None
    text: str


@dataclass(frozen=True)
class Header:
    """What the fixed header says, checked against the file's size."""
    records: int
    record_s: float
    labels: list[str]
    samples_per_record: list[int]
    patient: str
    trailing_bytes: int  # after the last whole record


@dataclass
class Recording:
    path: Path
    pod_id: str
    participant: str  # the pseudonymous code as recorded ("X": none was set)
    start: datetime  # UTC, to the second (the header's resolution)
    rate_hz: float
    labels: list[str]  # the EEG signals, in file order
    units: list[str]
    full_scale: list[float]  # the largest magnitude each EEG signal can hold
    n_samples: int
    annotations: list[Annotation]
    trailing_bytes: int
    equipment: str
    _reader: pyedflib.EdfReader = field(repr=False)
    _signal_index: list[int] = field(default_factory=list, repr=False)  # file signal of each EEG channel

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.rate_hz

    @property
    def channels(self) -> int:
        return len(self.labels)

    def channel(self, i: int) -> np.ndarray:
        """EEG signal ``i`` (0-based) in its physical unit (µV for hostd's recordings)."""
        return self._reader.readSignal(self._signal_index[i]).astype(np.float32)

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> Recording:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _int(raw: bytes, what: str, path: Path) -> int:
    try:
        return int(raw.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        raise ReportError(f"{path}: not a BDF file: its header field {what!r} is {raw!r}, not a number") from None


def read_header(path: Path) -> Header:
    """The fixed and signal headers of ``path``; ReportError if it is not a complete BDF+."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(256)
            if len(head) < 256:
                raise ReportError(f"{path}: not a BDF file: {size} bytes, shorter than a BDF header (256 bytes)")
            if head[:8] != BDF_MAGIC:
                raise ReportError(f"{path}: not a BDF file: it starts with {head[:8]!r}, a BDF with {BDF_MAGIC!r}")
            ns = _int(head[252:256], "number of signals", path)
            if ns < 1:
                raise ReportError(f"{path}: not a BDF file: its header counts {ns} signals")
            sig = f.read(256 * ns)
    except OSError as exc:
        raise ReportError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    if len(sig) < 256 * ns:
        raise ReportError(f"{path}: truncated: the header of its {ns} signals is cut short ({size} bytes in all)")
    if not head[192:236].startswith(b"BDF+"):
        raise ReportError(f"{path}: a BDF without annotations (reserved field {head[192:200]!r}); "
                          "hostd's recorder writes BDF+")
    records = _int(head[236:244], "number of data records", path)
    record_s = float(_int(head[244:252], "duration of a data record", path))
    labels = [sig[16 * i:16 * i + 16].decode("ascii", "replace").strip() for i in range(ns)]
    spr = [_int(sig[216 * ns + 8 * i:216 * ns + 8 * i + 8], f"samples per record of {labels[i]!r}", path)
           for i in range(ns)]
    if records == -1:
        raise ReportError(f"{path}: its header's record count is -1 (a writer that never finished it)")
    if records == 0:
        raise ReportError(f"{path}: an empty recording: its header counts 0 data records (no EEG was recorded)")
    if records < 0 or record_s <= 0:
        raise ReportError(f"{path}: not a BDF file: {records} records of {record_s:g} s")
    record_bytes = 3 * sum(spr)
    expected = 256 * (ns + 1) + records * record_bytes
    if size < expected:
        whole = max(0, size - 256 * (ns + 1)) // record_bytes
        raise ReportError(f"{path}: truncated: its header counts {records} records ({expected} bytes), the file has "
                          f"{size} bytes ({whole} whole records)")
    return Header(records, record_s, labels, spr, head[8:88].decode("ascii", "replace"), size - expected)


def participant_code(patient_field: str) -> str:
    """The first subfield of the BDF+ patient field: the pseudonymous code (nothing else is read)."""
    parts = patient_field.split()
    return parts[0] if parts else "X"


def shown_participant(code: str) -> str:
    """The code as the report shows it ("X" is the BDF+ way of saying none was set)."""
    return "not set (X)" if code == "X" else code


def _pod_id(path: Path, annotations: list[Annotation]) -> str:
    for a in annotations:
        m = _STREAM.match(a.text)
        if m:
            return m.group("pod")
    m = _FILE_NAME.match(path.name)
    return m.group("pod") if m else path.stem


def open_recording(path: str | os.PathLike) -> Recording:
    """Check and open one recording; ReportError (naming the file) if it cannot be used."""
    path = Path(path)
    header = read_header(path)
    eeg = [i for i, label in enumerate(header.labels) if label != ANNOTATION_LABEL]
    if len(eeg) == len(header.labels):
        raise ReportError(f"{path}: no {ANNOTATION_LABEL!r} signal: not a BDF+ recording")
    if not eeg:
        raise ReportError(f"{path}: no EEG signal, only {ANNOTATION_LABEL!r}")
    rates = {header.samples_per_record[i] for i in eeg}
    if len(rates) != 1:
        raise ReportError(f"{path}: its EEG signals have different sample rates ({sorted(rates)} per record)")
    try:
        reader = pyedflib.EdfReader(str(path))
    except OSError as exc:
        raise ReportError(f"{path}: pyedflib cannot read it: {exc}") from None
    try:
        onsets, durations, texts = reader.readAnnotations()
        annotations = [Annotation(float(o), float(d) if d >= 0 else None, str(t))
                       for o, d, t in zip(onsets, durations, texts)]
        annotations.sort(key=lambda a: a.onset_s)
        start = reader.getStartdatetime().replace(tzinfo=UTC)  # hostd writes the header in UTC
        rate = header.samples_per_record[eeg[0]] / header.record_s
        rec = Recording(
            path=path,
            pod_id=_pod_id(path, annotations),
            participant=participant_code(header.patient),
            start=start,
            rate_hz=rate,
            labels=[header.labels[i] for i in eeg],
            units=[reader.getPhysicalDimension(i) for i in eeg],
            full_scale=[min(abs(reader.getPhysicalMaximum(i)), abs(reader.getPhysicalMinimum(i))) for i in eeg],
            n_samples=header.records * header.samples_per_record[eeg[0]],
            annotations=annotations,
            trailing_bytes=header.trailing_bytes,
            equipment=reader.getEquipment() or "",
            _reader=reader,
            _signal_index=eeg,
        )
        return rec
    except BaseException:
        reader.close()
        raise
