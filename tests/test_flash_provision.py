"""Provisioning config: refused with the key named before anything is written; taken whole by the firmware."""
from __future__ import annotations

import json
import os
import subprocess

import pytest
from serial.tools.list_ports_common import ListPortInfo

from hypnolum import paths
from hypnolum.emulator.pod import find_micropython
from hypnolum.flash import boards, provision
from hypnolum.flash.errors import BadConfig


def test_defaults_and_pod_json():
    cfg = provision.make({"pod_id": "pod-07", "led_count": 144, "strobe_enabled": True})
    data = json.loads(cfg.pod_json())
    assert data["pod_id"] == "pod-07" and data["led_count"] == 144
    assert data["strobe_enabled"] is True and data["led_type"] == "ws2812"
    assert "psu_ma" not in data  # the firmware's default: the board's LED limit


@pytest.mark.parametrize("settings,key", [
    ({"pod_id": "pod 7"}, "pod_id"),
    ({"pod_id": "p", "led_count": 0}, "led_count"),
    ({"pod_id": "p", "led_order": "RGWB"}, "led_order"),
    ({"pod_id": "p", "psu_ma": 50}, "psu_ma"),
    ({"pod_id": "p", "headset": "muse"}, "headset"),
    ({"pod_id": "p", "led_type": "neon"}, "led_type"),
    ({"pod_id": "p", "brightness": 3}, "brightness"),
])
def test_bad_settings_name_the_key(settings, key):
    with pytest.raises(BadConfig, match=f"bench.toml: {key}:"):
        provision.make(settings, where="bench.toml")


def test_config_file_errors(tmp_path):
    bad = tmp_path / "bench.toml"
    bad.write_text("led_count = [")
    with pytest.raises(BadConfig, match="bench.toml: not valid toml"):
        provision.load_base(bad)
    with pytest.raises(BadConfig, match="cannot read"):
        provision.load_base(tmp_path / "absent.json")


def test_firmware_takes_every_key_as_written(tmp_path):
    """The firmware's own parser, under the real interpreter, accepts the file with no complaint."""
    cfg = provision.make({"pod_id": "pod-42", "led_type": "apa102", "led_count": 200, "led_order": "BGR",
                          "psu_ma": 8000, "headset": "none", "eeg_channels": 4, "strobe_enabled": True})
    (tmp_path / "pod.json").write_bytes(cfg.pod_json())
    code = ("from pod import config\nc = config.load()\n"
            "print(repr((c.errors, c.pod_id, c.led_type, c.led_count, c.led_order, c.psu_ma, c.headset, "
            "c.eeg_channels, c.strobe_enabled)))")
    env = dict(os.environ, MICROPYPATH=f"{paths.EMULATOR_SHIMS}:{paths.FIRMWARE}:.frozen", HYPNOLUM_POD_DIR=str(tmp_path))
    out = subprocess.run([find_micropython(), "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == repr(([], "pod-42", "apa102", 200, "BGR", 8000, "none", 4, True))


def test_discovery_keeps_known_usb_uarts_only():
    def port(device, vid, pid):
        info = ListPortInfo(device, skip_link_detection=True)
        info.vid, info.pid, info.serial_number = vid, pid, "SN" + device[-1]
        return info

    # an ESP32-S3 pod is 303a:1001 in the ROM loader and 303a:4001 while MicroPython runs
    infos = [port("/dev/ttyUSB1", 0x1A86, 0x7523), port("/dev/ttyACM0", 0x303A, 0x1001),
             port("/dev/ttyUSB0", 0x10C4, 0xEA60), port("/dev/ttyACM1", 0x2341, 0x0043),  # an Arduino
             port("/dev/ttyACM2", 0x303A, 0x4001), port("/dev/ttyS0", None, None)]
    found = boards.from_port_infos(infos)
    assert [(b.port, b.bridge) for b in found] == [
        ("/dev/ttyACM0", "ESP32-S3 USB-Serial/JTAG (ROM loader)"),
        ("/dev/ttyACM2", "ESP32-S3 USB CDC (MicroPython)"),
        ("/dev/ttyUSB0", "Silicon Labs CP210x"),
        ("/dev/ttyUSB1", "WCH CH340"),
    ]


def test_verify_opens_the_link_at_hostds_baud():
    """One setting for the pod link: the flash tool's verify uses hostd's serial default (CDC ignores it)."""
    from hypnolum.flash import verify
    from hypnolum.host.config import SerialConfig

    assert verify.LINK_BAUD == SerialConfig().baudrate
