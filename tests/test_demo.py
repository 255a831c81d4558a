"""`hypnolum demo` end to end: a private mosquitto, emulated pods and hostd as a
subprocess; stdout is a pipe, so the demo prints plain lines, not the live view."""
from __future__ import annotations

import os
import re
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
