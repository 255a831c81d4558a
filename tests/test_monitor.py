"""``hypnolum monitor``: every pod a broker knows, in 80 columns; against a real mosquitto,
a real hostd and emulated pods, and laid out for the hard cases."""
from __future__ import annotations

import asyncio
import copy
import json
import os
import re
import sys
from datetime import datetime, timedelta, timezone

import pytest
from rich.console import Console

from hypnolum.emulator.runner import Emulator
from hypnolum.monitor import MonitorModel

from helpers.doc_lines import json_example
from helpers.hostd import Hostd
from helpers.mqtt_watch import Watcher
from helpers.wait import wait_until

P = "hypnolum/v1/pods"


def render(model: MonitorModel, width: int) -> list[str]:
    console = Console(width=width, record=True, force_terminal=True, color_system=None)
    console.print(model.view())
    return console.export_text().splitlines()


def _state(pod_id: str, samples: int, at: datetime, **changes) -> bytes:
    state = copy.deepcopy(json_example("Pod state", '{\n  "pod_id"'))  # as docs/mqtt.md documents it
    state.update(pod_id=pod_id, updated=at.isoformat(timespec="milliseconds"))
    state["eeg"]["samples"] = samples
    for key, value in changes.items():
        state[key] = value
    return json.dumps(state).encode()


def test_the_table_fits_80_columns_whatever_the_pods_say():
    m = MonitorModel("127.0.0.1:1883")
    t0 = datetime(2026, 11, 27, 13, 40, tzinfo=timezone.utc)
    long_id = "pod-" + "x" * 60
    sixteen = [{"ch": i + 1, "state": ("ok", "railed", "flat", "noisy")[i % 4], "rms_uv": 1.5} for i in range(16)]
    m.on_message("hypnolum/v1/hosts/hostd-1/availability", b"online")
    for pod_id, extra in (("pod-01", {}),
                          (long_id, {"eeg": {"samples": 0, "quality": sixteen}}),
                          ("pod-03", {"power": {"temp_c16": 1200, "vin_mv": 4400, "limit_ma": 0, "full_ma": 2400,
                                                "flags": 0x04 | 0x08}, "clock": {"synced": False, "exchanges": 2},
                                      "scene": None, "link": "connecting", "reason": "heartbeat timeout"}),
                          ("pod-04", {"link": "refused", "reason": "schema fingerprint 0x0badf00d differs"}),
                          ("pod-05", {"scene": {**json_example("Pod state", '{\n  "pod_id"')["scene"],
                                                "stopped": True, "night": True}})):
        m.on_message(f"{P}/{pod_id}/availability", b"online" if pod_id == "pod-01" else b"offline")
        m.on_message(f"{P}/{pod_id}/state", _state(pod_id, 1000, t0, **extra))
    m.on_message(f"{P}/pod-01/state", _state("pod-01", 1500, t0 + timedelta(seconds=2)))
    m.on_message(f"{P}/pod-01/leds", json.dumps({"led_count": 30, "segments": 2, "rgb": "ff0000000000",
                                                  "at": t0.isoformat()}).encode())
    m.on_message(f"{P}/junk/state", b"{not json")
    m.on_message(f"{P}/junk2/state", b"[1, 2]")
    narrow = render(m, 80)
    text = "\n".join(narrow)
    assert max(map(len, narrow)) <= 80, "\n" + text
    rows = {line.split()[0]: line for line in narrow if line.startswith("pod-")}
    assert {"pod-01", "pod-03", "pod-04", "pod-05"} <= set(rows) and any(k.startswith("pod-xxxx") for k in rows), text
    assert "online" in rows["pod-01"] and " 250 " in rows["pod-01"] and "ooRFNooo" in rows["pod-01"], text
    assert "connecting" in rows["pod-03"] and "unsynced" in rows["pod-03"], text
    assert "dark:hot" in rows["pod-03"] and "derate:5V" in text, text  # the safety column wraps, never cuts
    assert "stopped" in rows["pod-05"] and "night" in text.split("pod-05", 1)[1], text
    assert "refused" in rows["pod-04"] and "junk" not in text.split("payload(s)")[1].split("\n", 1)[1], text
    assert "2 unreadable payload(s)" in text and "junk2/state: not a JSON object" in text, text
    assert "LEDs" not in text  # no room at 80 columns
    wide = render(m, 140)
    header = next(line for line in wide if line.startswith("pod "))
    assert max(map(len, wide)) <= 140 and "LEDs" in header and "rtt" in header, "\n".join(wide)
    assert "█·" in next(line for line in wide if line.startswith("pod-01")), "\n".join(wide)  # its `leds`
    assert any(line.startswith(long_id[:20]) for line in wide), "\n".join(wide)


@pytest.mark.broker
@pytest.mark.micropython
async def test_monitor_shows_every_pod_of_a_real_broker_in_80_columns(tmp_path, mosquitto):
    async with Emulator(2, tmp_path / "emu"):
        hostd = Hostd(tmp_path, mosquitto.port, pods_dir=tmp_path / "emu")
        async with Watcher(mosquitto.port) as watch:
            await watch.client.publish(f"{P}/junk/state", b"{not json", qos=1, retain=True)
            hostd.start()
            try:
                for pod in ("pod-01", "pod-02"):
                    await wait_until(lambda pod=pod: (watch.json(f"{P}/{pod}/state") or {}).get("eeg", {}).get("quality"),
                                     timeout=20, what=f"{pod} online with signal quality")
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "hypnolum", "monitor", "--once", "--config", str(hostd.config),
                    env={**os.environ, "COLUMNS": "80", "LINES": "25"},
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
                out, err = await asyncio.wait_for(proc.communicate(), 30)
                wide = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "hypnolum", "monitor", "--once", "--settle", "1", "--port",
                    str(mosquitto.port), env={**os.environ, "COLUMNS": "140"},
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
                wide_out, _ = await asyncio.wait_for(wide.communicate(), 30)
            finally:
                hostd.kill()
            await watch.client.publish(f"{P}/junk/state", b"", qos=1, retain=True)
    text = out.decode()
    assert proc.returncode == 0, (text, err.decode())
    lines = text.splitlines()
    assert max(map(len, lines)) <= 80, "\n" + text
    assert "hosts: test-host online" in text, text
    rows = {line.split()[0]: line.split() for line in lines if line.startswith("pod-")}
    for pod in ("pod-01", "pod-02"):
        cells = rows[pod]
        assert cells[1] == "online", text
        rate = next(int(c) for c in cells[2:] if c.isdigit() and int(c) > 20)
        assert 200 <= rate <= 300, text  # 250 Hz, from the states' sample counts
        assert "oooooooo" in cells, text
    assert "1 unreadable payload(s), last: hypnolum/v1/pods/junk/state: not JSON" in text, text
    wide_rows = [line for line in wide_out.decode().splitlines() if line.startswith("pod-")]
    strip = re.compile(r"  [█·]{16}  ")  # the `leds` segments, dark or lit
    assert len(wide_rows) == 2 and all(strip.search(row) for row in wide_rows), wide_out.decode()
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "hypnolum", "monitor", "--once", "--port",
                                                str(mosquitto.port + 1 if mosquitto.port < 65535 else 1),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 3 and "cannot connect" in err.decode(), (out, err)
