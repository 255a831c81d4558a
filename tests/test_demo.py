"""`hypnolum demo` end to end: a private mosquitto, emulated pods and hostd as a
subprocess; stdout is a pipe, so the demo prints plain lines, not the live view."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from hypnolum import paths

pytestmark = [pytest.mark.broker, pytest.mark.micropython]

SUMMARY = re.compile(r"^\s+(pod-\d+)\s+samples (\d+)\s+gaps (\d+)\s+commands (\d+) ok / (\d+) failed", re.M)


def _demo(*args: str, marker: str, **kwargs) -> subprocess.Popen:
    env = dict(os.environ, HYPNOLUM_DEMO_TEST_MARK=marker)
    return subprocess.Popen(
        [sys.executable, "-m", "hypnolum", "demo", *args],
        cwd=paths.ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


def _leftovers(marker: str, workdir: str | None) -> list[str]:
    """Processes still running that the demo started: they inherit its environment
    (micropython, mosquitto and hostd all do), or run in / name its workdir."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            try:
                cwd = os.readlink(entry / "cwd")
            except OSError:
                cwd = ""
            status = (entry / "status").read_text()
        except OSError:  # gone, or not ours
            continue
        if "State:\tZ" in status:
            continue
        if f"HYPNOLUM_DEMO_TEST_MARK={marker}".encode() in environ or (
            workdir and (workdir in cmdline or cwd.startswith(workdir))
        ):
            found.append(f"{entry.name}: {cmdline.strip()}")
    return found


def _workdir(out: str) -> str | None:
    m = re.search(r"workdir (\S+)", out)
    return m.group(1) if m else None


def test_demo_runs_two_pods_and_cleans_up():
    marker = uuid.uuid4().hex
    proc = _demo("--duration", "12", "--pods", "2", marker=marker)
    try:
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "hypnolum demo ok" in out, out
    rows = {m[0]: tuple(int(x) for x in m[1:]) for m in SUMMARY.findall(out)}
    assert set(rows) == {"pod-01", "pod-02"}, out
    for pod_id, (samples, _gaps, ok, failed) in rows.items():
        assert samples > 1000, (pod_id, out)  # ~12 s at 250 Hz
        assert ok >= 1 and failed == 0, (pod_id, out)
    assert re.search(r"pod-01 online .* eeg +2\d\d/s", out), out  # a plain line per pod every 5 s
    assert "\x1b[" not in out  # no live view / escapes when stdout is not a terminal
    workdir = _workdir(out)
    assert workdir and not Path(workdir).exists()  # removed after a good run
    time.sleep(0.2)
    assert _leftovers(marker, workdir) == []


def test_the_demos_recording_makes_a_debrief_report(tmp_path):
    # `make demo` records every pod (EEG, scenes, LED frames); with --keep it says how to
    # report on it, and that command makes the debrief page
    marker = uuid.uuid4().hex
    proc = _demo("--duration", "10", "--pods", "1", "--keep", marker=marker)
    try:
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    workdir = _workdir(out)
    try:
        assert proc.returncode == 0, out
        m = re.search(r"debrief: hypnolum report (\S+\.bdf) --frames (\S+) --html", out)
        assert m, out
        html = tmp_path / "pod-01.html"
        rep = subprocess.run([sys.executable, "-m", "hypnolum", "report", m[1], "--frames", m[2], "--html", str(html)],
                             capture_output=True, text=True, timeout=120)
        assert rep.returncode == 0, rep.stderr
        page = html.read_text()
        assert "pod-01" in page and "<img" in page and "http://" not in page and "https://" not in page
        assert "scene" in page.lower() and "alpha" in page.lower()
    finally:
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)


def test_demo_stops_cleanly_on_sigterm():
    marker = uuid.uuid4().hex
    proc = _demo("--forever", "--pods", "1", marker=marker)
    lines = []
    try:
        deadline = time.monotonic() + 30
        for line in proc.stdout:
            lines.append(line)
            if "pods online" in line or time.monotonic() > deadline:
                break
        assert any("all 1 pods online" in line for line in lines), "".join(lines)
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = "".join(lines) + rest
    assert proc.returncode == 0, out  # --forever ends by a signal: that is success
    assert re.search(r"pod-01\s+samples [1-9]\d*", out), out
    time.sleep(0.2)
    assert _leftovers(marker, _workdir(out)) == []


def test_demo_fails_clearly_when_pods_do_not_come_online():
    marker = uuid.uuid4().hex
    proc = _demo("--duration", "5", "--pods", "1", "--online-timeout", "0.01", marker=marker)
    try:
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, out
    assert "FAILED: pods never came online" in out and "pod-01" in out, out
    assert "hostd log" in out, out
    workdir = _workdir(out)
    assert workdir and Path(workdir).exists()  # kept for inspection
    time.sleep(0.2)
    assert _leftovers(marker, workdir) == []
    import shutil

    shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.parametrize("width", [80, 120, 160])
def test_the_live_view_is_readable_at_80_columns_and_uses_the_room_at_120(width):
    """The view ``hypnolum demo`` draws on a terminal, at the terminal's width: every pod's
    row whole within it; from 100 columns on every column with its full header."""
    import json
    import shutil

    from rich.console import Console

    from hypnolum.demo import Demo, _parser

    demo = Demo(_parser().parse_args(["--pods", "4"]), Console(width=width))
    try:
        model = demo.model
        for i, pod_id in enumerate(demo.pod_ids):
            model.on_message(f"hypnolum/v1/pods/{pod_id}/availability", b"online")
            model.on_message(f"hypnolum/v1/pods/{pod_id}/eeg", json.dumps({"n": 125, "gap": False}).encode())
            model.command_sent(pod_id, f"demo-1-{pod_id}", {"effect": "breathe", "color": [255, 120, 40],
                                                            "period_ms": 4000})
            model.on_message(f"hypnolum/v1/pods/{pod_id}/set/result",
                             json.dumps({"id": f"demo-1-{pod_id}", "ok": i != 3, "nack": "safety"}).encode())
        leds = {pod_id: bytes([255, 120, 40]) * 30 for pod_id in demo.pod_ids}
        console = Console(width=width, record=True, force_terminal=True, color_system=None)
        console.print(model.renderable(demo.header(), leds, footer=f"Ctrl-C stops · workdir {demo.workdir}"))
        lines = console.export_text().splitlines()
    finally:
        shutil.rmtree(demo.workdir, ignore_errors=True)
    text = "\n".join(lines)
    assert max(map(len, lines)) <= width, "\n" + text
    rows = [line for line in lines if line.startswith("pod-")]
    assert [row.split()[0] for row in rows] == demo.pod_ids, text
    for row in rows[:3]:
        assert row.split()[1] == "online" and "█" * 12 in row and "ok breathe #ff7828" in row, text
    assert "FAILED breathe" in rows[3], text
    header = next(line for line in lines if line.startswith("pod "))
    if width >= 120:
        for column in ("EEG/s", "samples", "gaps", "frames rx/bad", "cmds ok/fail", "last command"):
            assert column in header, (column, text)
        assert "…" not in header and all("█" * 24 in row for row in rows), text
    else:
        assert "EEG/s" in header and "last command" in header, text
