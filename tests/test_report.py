"""`hypnolum report`: the debrief page of a session.

End to end: an emulated pod (the real firmware) whose virtual headset is scripted from N2
sleep into relaxed wakefulness with alpha, hostd recording it, scene changes and a marker over
a private mosquitto, the LED frames the pod showed; the report of that recording must show
each section, the participant code, the scenes and the marker, real figures, more alpha in
the step recorded while the headset produced alpha, and the light that step was brighter.

On recordings made with hostd's recorder directly: gaps and their causes, the signal quality
of flat, railed and lead-off channels, a participant stop, and every kind of bad input."""
from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import signal
import subprocess
import sys
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hypnolum.emulator.frames import FrameRecorder
from hypnolum.emulator.leds import LedFrame
from hypnolum.emulator.runner import Emulator
from hypnolum.emulator.signals import Participant, SignalSource
from hypnolum.host.recorder import Recorder
from hypnolum.host.state import SCALE_UV
from hypnolum.report.cli import main as report_main

from helpers.hostd import Hostd
from helpers.mqtt_watch import Watcher
from helpers.wait import wait_until

P = "hypnolum/v1/pods"
RATE = 250
N2_S, WAKE_S = 12.0, 6.0  # the headset's script: N2, wake, then N2 again
SECTIONS = ("summary", "timeline", "eeg", "bands", "alpha", "gaps", "quality")
MARKER = "eyes closed <b>&"


class _Page(HTMLParser):
    """Section ids, image sources, external references and the embedded report data of a page."""

    def __init__(self, text: str):
        super().__init__()
        self.sections: list[str] = []
        self.images: list[str] = []
        self.external: list[str] = []
        self.data = None
        self._in_data = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self.sections.append(a.get("id"))
        if tag == "img":
            self.images.append(a.get("src", ""))
        for key in ("src", "href"):
            if key in a and not (a[key] or "").startswith(("data:", "#")):
                self.external.append(f"<{tag} {key}={a[key]}>")
        if tag == "link":
            self.external.append(f"<link {a}>")
        self._in_data = tag == "script" and a.get("id") == "report-data"
        if tag == "script" and not self._in_data:
            self.external.append(f"<script {a}>")

    def handle_data(self, data):
        if self._in_data:
            self.data = json.loads(data)

    def handle_endtag(self, tag):
        self._in_data = False


def check_page(html: str) -> _Page:
    """Self-contained, every section, every figure a real picture."""
    page = _Page(html)
    assert page.sections == list(SECTIONS) + (["notes"] if "notes" in page.sections else []), page.sections
    assert page.external == [], page.external
    assert not re.search(r"url\(|@import|https?://", html), "the page refers to something outside it"
    assert len(page.images) == 5, len(page.images)
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        img = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("L")
        assert img.width >= 800 and img.height >= 150, img.size
        assert np.asarray(img).std() > 10, "a blank figure"
    assert page.data is not None
    return page


def headset_s(pod) -> float:
    """Seconds of EEG the pod's virtual headset has sent (where it is in its sleep script)."""
    return pod.headset.stats.packets / RATE


async def at_headset(pod, lo: float, hi: float) -> None:
    """Wait until the headset is ``lo``..``hi`` s into its script (fail if it is already past)."""
    assert headset_s(pod) < hi, f"the headset is {headset_s(pod):.1f} s into its script, past {hi} s: hostd came late"
    await wait_until(lambda: lo <= headset_s(pod), timeout=hi + 5, interval=0.05, what=f"headset {lo} s into its script")
    assert headset_s(pod) <= hi, f"the headset is {headset_s(pod):.1f} s into its script, past {hi} s"


async def send(watch: Watcher, leaf: str, payload: dict) -> dict:
    before = len(watch.history[f"{P}/pod-01/{leaf}/result"])
    await watch.publish(f"{P}/pod-01/{leaf}", payload)
    res = await wait_until(lambda: watch.all_json(f"{P}/pod-01/{leaf}/result")[before:], timeout=10,
                           what=f"{leaf} result")
    assert res[0]["ok"], res
    return res[0]


@pytest.mark.broker
@pytest.mark.micropython
async def test_report_of_a_recorded_session(tmp_path, mosquitto, capsys):
    person = Participant.from_seed(5, script=(("N2", N2_S), ("wake", WAKE_S), ("N2", 60.0)), loop_script=False,
                                   alpha_uv=30.0, blinks_per_min=0.0)
    frames, rec = tmp_path / "frames", tmp_path / "rec"
    async with Emulator(1, tmp_path / "emu", seed=5, led_count=16, record_frames=frames, participant=person) as emu:
        await emu.wait_links(20)
        pod = emu["pod-01"]
        hostd = Hostd(tmp_path, mosquitto.port, pods_dir=tmp_path / "emu",
                      extra=f'[recorder]\nenabled = true\ndir = "{rec}"\n[recorder.participants]\n"pod-01" = "P042"\n')
        hostd.start()
        try:
            async with Watcher(mosquitto.port) as watch:
                await wait_until(lambda: watch.text(f"{P}/pod-01/availability") == "online", timeout=30,
                                 what="pod-01 online")
                await at_headset(pod, 0.0, N2_S - 4.5)  # N2: little alpha; a dim light
                await send(watch, "set", {"id": "dim", "scene": {"effect": "breathe", "color": [255, 200, 150],
                                                                 "brightness": 0.1, "period_ms": 4000}})
                await at_headset(pod, N2_S + 0.3, N2_S + 1.5)  # awake, alpha; a bright light
                await send(watch, "set", {"id": "bright", "scene": {"effect": "solid", "color": [255, 200, 150],
                                                                    "brightness": 0.9, "transition_ms": 200}})
                await send(watch, "marker", {"text": MARKER})
                await at_headset(pod, N2_S + WAKE_S - 1.5, N2_S + WAKE_S - 0.3)  # still awake: the session ends
            hostd.proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(hostd.proc.wait, 15) == 0
        finally:
            hostd.kill()
    (bdf,) = rec.glob("pod-01_*.bdf")
    out, pdf = tmp_path / "report.html", tmp_path / "report.pdf"
    capsys.readouterr()
    code = report_main([str(bdf), "--frames", str(frames / "pod-01.frames"), "--html", str(out), "--pdf", str(pdf)])
    assert code == 0, capsys.readouterr().err
    html = out.read_text()
    page = check_page(html)
    d = page.data

    assert '<strong id="participant">P042</strong>' in html and d["participant"] == "P042"
    assert "eyes closed &lt;b&gt;&amp;" in html and MARKER not in html  # free text is escaped
    assert [e["text"] for e in d["events"] if e["kind"] == "marker"] == [f"marker: {MARKER}"]
    assert [s["scene"] for s in d["steps"]][-2:] == ["breathe", "solid"], d["steps"]
    assert "scene: breathe brightness 0.1" in html and "scene: solid brightness 0.9" in html

    dim, bright = d["steps"][-2:]
    assert bright["epochs"] >= 2 and dim["epochs"] >= 2, (dim, bright)
    # the headset produced alpha while the bright scene was on: its share is clearly higher
    assert bright["shares"]["alpha"] > 1.5 * dim["shares"]["alpha"], (dim, bright)
    # the frames show the light the pod drove (its governor slews it up over seconds): brighter,
    # and alpha rises with it here
    assert bright["brightness"] > 3 * dim["brightness"] and bright["brightness"] > 0.2, (dim, bright)
    assert d["alpha_brightness_r"] is not None and d["alpha_brightness_r"] > 0.5, d["alpha_brightness_r"]
    assert d["light"]["frames"] > 100 and d["light"]["skipped"] == 0
    assert all(q["ok"] > 0.9 for q in d["quality"]), d["quality"]  # the emulated electrodes are all on

    pdf_bytes = pdf.read_bytes()
    assert pdf_bytes.startswith(b"%PDF") and len(re.findall(rb"/Type\s*/Page\b(?!s)", pdf_bytes)) == 6

    # the frames of this pod do not belong to a recording of another pod
    other = tmp_path / "pod-02.frames"
    other.write_bytes((frames / "pod-01.frames").read_bytes())
    assert report_main([str(bdf), "--frames", str(other), "--html", str(tmp_path / "x.html")]) == 1
    err = capsys.readouterr().err
    assert str(other) in err and "pod pod-02" in err and "pod-01's" in err, err
    assert not (tmp_path / "x.html").exists()


# -- recordings made with the recorder directly ------------------------------------------------
START = datetime(2026, 3, 14, 22, 0, 0, tzinfo=UTC)


def _wire(uv: np.ndarray) -> bytes:
    """µV rows -> the pod's wire format (sample-major 24-bit big-endian counts)."""
    counts = np.clip(np.rint(uv / SCALE_UV), -(1 << 23), (1 << 23) - 1).astype(">i4")
    return counts.view(np.uint8).reshape(len(uv), -1, 4)[:, :, 1:].tobytes()


def make_recording(directory: Path, pod_id: str = "pod-01", seconds: int = 24) -> Path:
    """A recording of a participant with one railed and one lead-off electrode, a shorted
    (flat) channel 3, a scene change, a participant stop, a gap of zeros and one left out."""
    person = Participant.from_seed(2, railed=(3,), lead_off=(5,), blinks_per_min=0.0)
    src = SignalSource(person, RATE, channels=8)
    rec = Recorder(directory, pod_id, 8, RATE, participant="S-07", start=START)
    rec.boot_id = 1
    seq = pos = 0
    for second in range(seconds):
        uv = src.take(RATE)
        uv[:, 2] = 0.0
        if second == 10:
            rec.gap(pos, 2 * RATE, True, "pod cannot replay")
            pos += 2 * RATE
            seq += 2 * RATE
        if second == 16:
            rec.gap(pos, 30, False, "pod rebooted, count estimated from the host clock")
        rec.samples(pos, _wire(uv), RATE, seq, 0, 0.0)
        pos += RATE
        seq += RATE
        if second == 4:
            rec.annotate(pos, "scene: aurora brightness 0.6 color [40, 160, 255] transition 500 ms period 8000 ms")
        if second == 14:
            rec.annotate(pos, "marker: stop")
    rec.close()
    return rec.path


def frames_file(path: Path, t0: float, seconds: float, level: int = 200) -> Path:
    fr = FrameRecorder(path)
    for i in range(int(seconds * 10)):
        fr.write(LedFrame(0.0, i * 100, i, bytes([level, level // 2, 0]) * 12), t0 + i / 10)
    fr.close()
    return path


def test_gaps_quality_and_stop_of_a_recording(tmp_path, capsys):
    bdf = make_recording(tmp_path / "rec")
    frames = frames_file(tmp_path / "pod-01.frames", START.timestamp(), 30)
    out = tmp_path / "r.html"
    assert report_main([str(bdf), "--frames", str(frames), "--html", str(out)]) == 0, capsys.readouterr().err
    html = out.read_text()
    d = check_page(html).data
    assert d["participant"] == "S-07" and ">S-07</strong>" in html

    gaps = {g["cause"]: g for g in d["gaps"]}
    assert gaps["pod cannot replay"]["lost"] == 500 and gaps["pod cannot replay"]["on_axis"]
    assert gaps["pod rebooted, count estimated from the host clock"] == {
        "t": pytest.approx(18.0), "lost": 30, "seconds": pytest.approx(0.12),
        "cause": "pod rebooted, count estimated from the host clock", "on_axis": False}
    assert "530 samples (2.1 s) lost in 2 gaps" in html and "pod cannot replay" in html

    q = {c["ch"]: c for c in d["quality"]}
    assert q[3]["flat"] == 1.0 and q[4]["railed"] == 1.0 and q[6]["noisy"] == 1.0, d["quality"]
    assert all(q[c]["ok"] > 0.9 for c in (1, 2, 5, 7, 8)), d["quality"]
    # the gap's zeros are not EEG: no epoch overlapping them is judged (they would be flat)
    assert q[1]["ok"] == 1.0 and d["eeg_s"] == pytest.approx(26.0)

    names = [s["scene"] for s in d["steps"]]
    assert names == ["(as the pod started)", "aurora", "stop"], d["steps"]
    assert [(s["t0"], s["t1"]) for s in d["steps"]] == [(0.0, 5.0), (5.0, 17.0), (17.0, 26.0)], d["steps"]
    assert all(s["brightness"] == pytest.approx((0.2126 * 200 + 0.7152 * 100) / 255, abs=1e-3) for s in d["steps"])


def test_leds_telemetry_lines_as_the_light(tmp_path, capsys):
    bdf = make_recording(tmp_path / "rec", seconds=8)
    lines = []
    for i in range(40):
        at = datetime.fromtimestamp(START.timestamp() + i / 5, UTC).isoformat()
        payload = json.dumps({"led_count": 30, "segments": 2, "rgb": "ffffff000000" if i < 20 else "000000000000",
                              "at": at})
        lines.append(f"{P}/pod-01/leds {payload}")
    lines.insert(5, f"{P}/pod-01/leds {{\"segments\": 2, \"rgb\": \"zz\"}}")
    leds = tmp_path / "session.leds"
    leds.write_text("\n".join(lines) + "\n")
    out = tmp_path / "r.html"
    assert report_main([str(bdf), "--frames", str(leds), "--html", str(out)]) == 0
    err = capsys.readouterr().err
    assert "session.leds: 1 lines skipped" in err and "line 6" in err, err
    d = check_page(out.read_text()).data
    assert d["light"] == {"file": "session.leds", "kind": "leds telemetry", "frames": 40, "skipped": 1}
    assert "session.leds line 6: skipped: rgb: expected 12 hex digits for 2 segments" in d["notes"]
    # white on half the strip for 4 s, then dark; the scene changed at 5 s
    assert [s["brightness"] for s in d["steps"]] == [pytest.approx(0.4, abs=0.03), pytest.approx(0.0)], d["steps"]

    lines[0] = f"{P}/pod-02/leds " + lines[0].split(" ", 1)[1]
    leds.write_text("\n".join(lines) + "\n")
    assert report_main([str(bdf), "--frames", str(leds), "--html", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"{leds}: line 1 is pod pod-02's leds telemetry; the recording is pod pod-01's" in err


def test_bad_inputs_are_named_and_refused(tmp_path, capsys):
    good = make_recording(tmp_path / "rec", seconds=6)
    data = good.read_bytes()
    cases = {
        "notes.bdf": (b"just some text, not a recording\n" * 20, "not a BDF file"),
        "short.bdf": (data[:100], "shorter than a BDF header"),
        "cut.bdf": (data[:-5000], "truncated: its header counts"),
    }
    empty = Recorder(tmp_path / "rec", "pod-03", 8, RATE, start=START)
    empty.close()
    for name, (content, what) in cases.items():
        (tmp_path / name).write_bytes(content)
    runs = [(tmp_path / n, None, w) for n, (_, w) in cases.items()]
    runs.append((empty.path, None, "an empty recording"))
    runs.append((tmp_path / "missing.bdf", None, "No such file"))
    runs.append((good, frames_file(tmp_path / "pod-02.frames", START.timestamp(), 5), "the frames of pod pod-02"))
    runs.append((good, frames_file(tmp_path / "f" / "pod-01.frames", START.timestamp() - 86400, 5), "not this session"))
    runs.append((good, tmp_path / "notes.bdf", "neither a frames file nor lines of leds telemetry"))
    out = tmp_path / "out.html"
    for bdf, frames, what in runs:
        args = [str(bdf), "--html", str(out)] + (["--frames", str(frames)] if frames else [])
        assert report_main(args) == 1, (bdf, frames)
        err = capsys.readouterr().err
        assert err.startswith("hypnolum report: ") and err.count("\n") == 1, err
        assert str(frames or bdf) in err and what in err, (what, err)
        assert "Traceback" not in err and not out.exists()
    # the same through the installed command: exit status 1, one line, no traceback
    proc = subprocess.run([sys.executable, "-m", "hypnolum", "report", str(tmp_path / "cut.bdf"), "--html", str(out)],
                          check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stdout == "", proc
    assert proc.stderr == f"hypnolum report: {tmp_path / 'cut.bdf'}: truncated: its header counts 6 records " \
                          f"({len(data)} bytes), the file has {len(data) - 5000} bytes (5 whole records)\n", proc.stderr
