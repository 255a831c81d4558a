"""hostd is secure by default: a broker off this machine is refused unless the connection is
TLS with a username (or a client certificate), or the config says ``allow_insecure = true``."""
from __future__ import annotations

import subprocess
import sys

import pytest

from hypnolum.host.config import ConfigError, is_loopback, parse

from helpers.certs import CertAuthority


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1", "localhost", "LocalHost",
                                  "localhost."])
def test_a_broker_on_loopback_may_be_plain_and_anonymous(host):
    assert is_loopback(host)
    assert parse({"mqtt": {"host": host}}).mqtt.host == host


@pytest.mark.parametrize("host", ["10.0.0.5", "192.168.1.2", "0.0.0.0", "::", "fe80::1", "broker.example",
                                  "localhost.example", "127.0.0.1.example", "my-localhost"])
@pytest.mark.parametrize("mqtt, flaws", [
    ({}, ["plaintext", "anonymous"]),
    ({"tls": True}, ["anonymous"]),
    ({"username": "hostd-1", "password": "pw"}, ["plaintext"]),
])
def test_a_remote_broker_must_be_tls_and_authenticated(host, mqtt, flaws):
    assert not is_loopback(host)
    with pytest.raises(ConfigError) as info:
        parse({"mqtt": {"host": host, **mqtt}})
    [error] = info.value.errors
    assert error.startswith("mqtt: ")
    for key in ("mqtt.host", "mqtt.tls", "mqtt.username", "mqtt.allow_insecure", repr(host)):
        assert key in error, error
    assert [f for f in ("plaintext", "anonymous") if f in error] == flaws


def test_tls_with_a_username_or_a_client_certificate_is_enough(tmp_path):
    ca = CertAuthority(tmp_path)
    cert, key = ca.issue("hostd-1", "hostd-1", server=False)
    assert parse({"mqtt": {"host": "broker.example", "tls": True, "username": "hostd-1"}}).mqtt.tls
    assert parse({"mqtt": {"host": "10.0.0.5", "tls": True, "cert_file": str(cert), "key_file": str(key)}}).mqtt.tls


def test_allow_insecure_accepts_an_unprotected_remote_broker():
    cfg = parse({"mqtt": {"host": "10.0.0.5", "allow_insecure": True}}).mqtt
    assert (cfg.host, cfg.tls, cfg.username, cfg.allow_insecure) == ("10.0.0.5", False, None, True)


@pytest.mark.parametrize("option", ["--check-config", "--config"])
def test_hostd_refuses_to_start_with_an_unprotected_remote_broker(tmp_path, option):
    conf = tmp_path / "hostd.toml"
    conf.write_text('[host]\nid = "hostd-1"\n[mqtt]\nhost = "192.0.2.10"\nport = 1883\n')
    out = subprocess.run([sys.executable, "-m", "hypnolum", "hostd", option, str(conf)],
                         capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 2, out
    [line] = out.stderr.splitlines()
    assert line.startswith(f"{conf}: mqtt: ") and "mqtt.allow_insecure = true" in line, line
    conf.write_text('[host]\nid = "hostd-1"\n[mqtt]\nhost = "192.0.2.10"\nport = 1883\nallow_insecure = true\n')
    checked = subprocess.run([sys.executable, "-m", "hypnolum", "hostd", "--check-config", str(conf)],
                             capture_output=True, text=True, timeout=30, check=False)
    assert checked.returncode == 0, checked.stderr
