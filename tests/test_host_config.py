"""hostd configuration: defaults, validation errors naming the key, --check-config."""
from __future__ import annotations

import socket

import pytest

from hypnolum.host import daemon
from hypnolum.host.config import ConfigError, load, parse


def test_defaults():
    cfg = parse({})
    assert cfg.host.id == socket.gethostname()
    assert (cfg.mqtt.host, cfg.mqtt.port, cfg.mqtt.keepalive) == ("127.0.0.1", 1883, 30)
    assert cfg.serial.baudrate == 921600 and cfg.serial.scan_interval_s == 0.5
    assert cfg.pods.command_retries == 3 and cfg.pods.heartbeat_timeout_s == 3.0
    assert cfg.eeg.publish_interval_s == 0.5
    assert parse({"eeg": {"publish_interval_s": 0}}).eeg.publish_interval_s == 0  # each batch at once


def test_full_file_loads_frozen(tmp_path):
    path = tmp_path / "h.toml"
    path.write_text('[host]\nid = "hostd-1"\n[mqtt]\nport = 1884\n'
                    '[serial]\nports = ["/dev/ttyUSB*", "/tmp/x.tty"]\n[pods]\nping_interval_s = 0.5\n')
    cfg = load(path)
    assert cfg.host.id == "hostd-1" and cfg.mqtt.port == 1884
    assert cfg.serial.ports == ("/dev/ttyUSB*", "/tmp/x.tty")
    with pytest.raises(Exception):
        cfg.mqtt.port = 1  # frozen


@pytest.mark.parametrize("data, key", [
    ({"mqtt": {"port": 70000}}, "mqtt.port"),
    ({"mqtt": {"port": "x"}}, "mqtt.port"),
    ({"mqtt": {"prot": 1}}, "mqtt.prot"),
    ({"serial": {"ports": "/dev/ttyUSB0"}}, "serial.ports"),
    ({"pods": {"command_timeout_s": 0}}, "pods.command_timeout_s"),
    ({"host": {"id": "has space"}}, "host.id"),
    ({"eeg": {"publish_interval_s": -0.1}}, "eeg.publish_interval_s"),
    ({"extra": {}}, "extra"),
])
def test_errors_name_the_key(data, key):
    with pytest.raises(ConfigError) as info:
        parse(data)
    assert [e.split(":")[0] for e in info.value.errors] == [key]


def test_every_error_is_reported():
    with pytest.raises(ConfigError) as info:
        parse({"mqtt": {"port": 0, "keepalive": -1}, "pods": {"zap": 1}})
    assert sorted(e.split(":")[0] for e in info.value.errors) == ["mqtt.keepalive", "mqtt.port", "pods.zap"]


def test_check_config_exit_codes(tmp_path, capsys):
    good, bad, broken = tmp_path / "good.toml", tmp_path / "bad.toml", tmp_path / "broken.toml"
    good.write_text('[mqtt]\nport = 1883\n')
    bad.write_text('[mqtt]\nport = 0\n[serial]\nbaud = 9600\n')
    broken.write_text('[mqtt\n')
    assert daemon.main(["--check-config", str(good)]) == 0
    assert daemon.main(["--check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: mqtt.port: " in err and f"{bad}: serial.baud: " in err
    assert daemon.main(["--check-config", str(broken)]) == 2
    assert daemon.main(["--check-config", str(tmp_path / "missing.toml")]) == 2
    assert "(syntax)" in capsys.readouterr().err
