"""Provisioning config: refused with the key named before anything is written (that the
firmware takes it whole: tests/test_pod_config.py); USB discovery; the verify link's baud."""
from __future__ import annotations

import json

import pytest
from serial.tools.list_ports_common import ListPortInfo

from hypnolum.flash import boards, provision
from hypnolum.flash.errors import BadConfig


def test_defaults_and_pod_json():
    cfg = provision.make({"pod_id": "pod-07", "led_count": 144, "strobe_enabled": True, "led_type": "ws2812"})
    # what differs from the pod's defaults, and only that: the pod takes its own for the rest
    assert json.loads(cfg.pod_json()) == {"pod_id": "pod-07", "led_count": 144, "strobe_enabled": True}
    assert (cfg.led_type, cfg.eeg_channels) == ("ws2812", 8)
    assert cfg.psu_ma is None  # the firmware's default: its board's LED limit


@pytest.mark.parametrize("settings,key", [
    ({"pod_id": "pod 7"}, "pod_id"),
    ({"pod_id": "p", "led_count": 0}, "led_count"),
    ({"pod_id": "p", "led_order": "RGWB"}, "led_order"),
    ({"pod_id": "p", "psu_ma": 50}, "psu_ma"),
    ({"pod_id": "p", "headset": "muse"}, "headset"),
    ({"pod_id": "p", "led_type": "neon"}, "led_type"),
    ({"pod_id": "p", "brightness": 3}, "'brightness' is not a pod.json key"),
])
def test_bad_settings_name_the_key(settings, key):
    with pytest.raises(BadConfig, match=f"^bench.toml: {key}"):
        provision.make(settings, where="bench.toml")


def test_config_file_errors(tmp_path):
    bad = tmp_path / "bench.toml"
    bad.write_text("led_count = [")
    with pytest.raises(BadConfig, match="bench.toml: not valid toml"):
        provision.load_base(bad)
    with pytest.raises(BadConfig, match="cannot read"):
        provision.load_base(tmp_path / "absent.json")


def test_discovery_keeps_known_usb_uarts_only():
    def port(device, vid, pid, interface=None):
        info = ListPortInfo(device, skip_link_detection=True)
        info.vid, info.pid, info.serial_number = vid, pid, "SN" + device[-1]
        info.interface = interface  # the USB interface's iInterface string, as pyserial reads it
        return info

    # an ESP32-S3 pod is 303a:1001 in the ROM loader and 303a:4001 while MicroPython runs, with
    # the pod link's own tty beside the REPL's once the app runs (usb_link "cdc"), or 303a:4021
    # with the REPL's tty alone (usb_link "vendor")
    infos = [port("/dev/ttyUSB1", 0x1A86, 0x7523), port("/dev/ttyACM0", 0x303A, 0x1001),
             port("/dev/ttyUSB0", 0x10C4, 0xEA60), port("/dev/ttyACM1", 0x2341, 0x0043),  # an Arduino
             port("/dev/ttyACM2", 0x303A, 0x4001, "Board CDC"), port("/dev/ttyACM3", 0x303A, 0x4001, "hypnolum link"),
             port("/dev/ttyACM4", 0x303A, 0x4021, "Board CDC"), port("/dev/ttyS0", None, None)]
    found = boards.from_port_infos(infos)
    assert [(b.port, b.bridge) for b in found] == [
        ("/dev/ttyACM0", "ESP32-S3 USB-Serial/JTAG (ROM loader)"),
        ("/dev/ttyACM2", "ESP32-S3 USB CDC (MicroPython)"),
        ("/dev/ttyACM4", 'ESP32-S3 USB CDC + vendor link (pod firmware, usb_link "vendor")'),
        ("/dev/ttyUSB0", "Silicon Labs CP210x"),
        ("/dev/ttyUSB1", "WCH CH340"),
    ]


def test_verify_opens_the_link_at_hostds_baud():
    """One setting for the pod link: the flash tool's verify uses hostd's serial default (CDC ignores it)."""
    from hypnolum.flash import verify
    from hypnolum.host.config import SerialConfig

    assert verify.LINK_BAUD == SerialConfig().baudrate
