"""``hypnolum report``: the debrief of one pod session.

    hypnolum report RECORDING.bdf [--frames FILE] --html OUT [--pdf OUT]

RECORDING.bdf is one of hostd's recordings (``[recorder] dir``); ``--frames`` the light the
pod showed: ``<pod_id>.frames`` from ``hypnolum emulate --record-frames``, or the pod's
``leds`` telemetry saved with ``mosquitto_sub`` (docs/report.md). Outputs are replaced
whole, never left half written. Exit status 0, 1 for an input that cannot be reported on
(the message names the file and what is wrong), 2 for a usage error.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import ReportError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hypnolum report",
                                description="A self-contained HTML page (and a PDF) debriefing one pod session.")
    p.add_argument("recording", type=Path, metavar="RECORDING.bdf", help="a recording hostd wrote")
    p.add_argument("--frames", type=Path, metavar="FILE",
                   help="the light the pod showed: <pod_id>.frames, or its leds telemetry (mosquitto_sub lines)")
    p.add_argument("--html", type=Path, metavar="OUT", help="write the page here")
    p.add_argument("--pdf", type=Path, metavar="OUT", help="write a PDF here as well")
    return p


def _write(out: Path, fill: Callable[[Path], None]) -> None:
    """``fill`` a temporary file next to ``out``, then put it in place in one step."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent if str(out.parent) else ".")
        os.close(fd)
    except OSError as exc:
        raise ReportError(f"{out}: cannot write there: {exc.strerror or exc}") from None
    try:
        fill(Path(tmp))
        os.chmod(tmp, 0o644 & ~_umask())
        os.replace(tmp, out)
    except OSError as exc:
        raise ReportError(f"{out}: cannot write it: {exc.strerror or exc}") from None
    finally:
        Path(tmp).unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def run(args: argparse.Namespace) -> list[Path]:
    from .assemble import (
        build_report,  # numpy, pyedflib and matplotlib only when a report is made
    )
    from .page import render
    from .pdf import write_pdf

    report = build_report(args.recording, args.frames)
    written = []
    if args.html is not None:
        page = render(report)
        _write(args.html, lambda p: p.write_text(page, encoding="utf-8"))
        written.append(args.html)
    if args.pdf is not None:
        _write(args.pdf, lambda p: write_pdf(report, p))
        written.append(args.pdf)
    for note in report.notes:
        print(f"hypnolum report: note: {note}", file=sys.stderr)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.html is None and args.pdf is None:
        parser.error("say where to write the report: --html OUT (and/or --pdf OUT)")
    try:
        written = run(args)
    except ReportError as exc:
        print(f"hypnolum report: {exc}", file=sys.stderr)
        return 1
    for out in written:
        print(f"wrote {out} ({out.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
