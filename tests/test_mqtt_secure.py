"""The secure MQTT contract against a private mosquitto running the shipped configuration:
TLS only, passwords, client ids bound to usernames, the shipped ACL (hosts write only their
own pods' topics). ``secure_broker()`` starts it for the other broker-config tests too."""
from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess
import tempfile
import uuid
from pathlib import Path

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from hypnolum.broker import PrivateBroker

from helpers.certs import CertAuthority
from helpers.fake_pod import FakePod
from helpers.hostd import Hostd
from helpers.mqtt_watch import Watcher
from helpers.wait import wait_until

pytestmark = pytest.mark.broker

DEPLOY = Path(__file__).resolve().parent.parent / "host" / "deploy" / "mosquitto"
P = "hypnolum/v1/pods"
USERS = {"hostd-1": "pw-one", "hostd-2": "pw-two", "controller": "pw-ctl", "experimenter": "pw-exp",
         "operator": "pw-op"}


def shipped_conf(workdir: Path) -> str:
    """The shipped mosquitto config with its paths pointing into ``workdir`` and a test port;
    every rule stays as shipped."""
    text = (DEPLOY / "hypnolum.conf").read_text()
    for path in ("/etc/mosquitto/certs/", "/etc/mosquitto/", "/usr/local/lib/hypnolum/"):
        assert path in text, path
        text = text.replace(path, f"{workdir}/")
    assert "\nlistener 8883\n" in text
    text = text.replace("\nlistener 8883\n", "\nlistener {port} 127.0.0.1\n")
    return text + f"persistence_location {workdir}/\n"


def secure_broker() -> PrivateBroker:
    """The shipped config, ACL and client-id plugin (built with the shipped Makefile) on a
    free loopback port, with a throw-away CA and the users of ``USERS``. ``broker.ca``: the CA;
    ``broker.client_cert``: a client certificate for hostd-1; stop it with ``close_secure_broker``."""
    # not under pytest's 0700 tmp tree: mosquitto reads these files after dropping to its own user
    work = Path(tempfile.mkdtemp(prefix="hypnolum-secure-broker-"))
    built = subprocess.run(["make", "-s", "-C", str(DEPLOY), f"OUT={work}"], capture_output=True, text=True, check=False)
    assert built.returncode == 0, f"building the client-id plugin failed (needs gcc, mosquitto-dev, libmosquitto-dev):\n{built.stderr}"
    ca = CertAuthority(work)
    ca.issue("server", "localhost", server=True)
    client_cert = ca.issue("hostd-1-client", "hostd-1", server=False)
    passwd = work / "hypnolum.passwd"
    passwd.touch()
    for user, pw in USERS.items():
        subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, pw], check=True, capture_output=True)
    shutil.copyfile(DEPLOY / "hypnolum.acl", work / "hypnolum.acl")
    broker = PrivateBroker(work, conf=shipped_conf(work)).start()
    broker.ca = ca
    broker.client_cert = client_cert
    return broker


def close_secure_broker(broker: PrivateBroker) -> None:
    broker.stop()
    shutil.rmtree(broker.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def secure():
    broker = secure_broker()
    yield broker
    close_secure_broker(broker)


def tls(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


def client(broker, user: str | None, password: str | None = None, **kw) -> aiomqtt.Client:
    return aiomqtt.Client("127.0.0.1", broker.port, username=user, password=password if password is not None else USERS.get(user),
                          tls_context=kw.pop("tls_context", tls(broker.ca.ca_file)), timeout=5, **kw)


async def test_anonymous_is_refused(secure):
    with pytest.raises(aiomqtt.MqttError) as info:
        async with client(secure, None):
            pass
    assert "authori" in str(info.value).lower()


async def test_wrong_password_is_refused(secure):
    with pytest.raises(aiomqtt.MqttError) as info:
        async with client(secure, "hostd-1", "not-the-password"):
            pass
    assert "authori" in str(info.value).lower() or "password" in str(info.value).lower()


async def test_plain_tcp_is_refused_where_tls_is_required(secure):
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client("127.0.0.1", secure.port, username="hostd-1", password=USERS["hostd-1"], timeout=3):
            pass


async def test_a_server_certificate_from_another_ca_is_refused(secure, tmp_path):
    other = CertAuthority(tmp_path / "other", name="not our CA")
    with pytest.raises(aiomqtt.MqttError):
        async with client(secure, "hostd-1", tls_context=tls(other.ca_file)):
            pass


async def test_a_host_cannot_publish_into_another_hosts_pods(secure):
    async with Watcher(secure.port, ("hypnolum/v1/#",), username="controller", password=USERS["controller"],
                       tls_context=tls(secure.ca.ca_file)) as watch:
        async with client(secure, "hostd-1", protocol=aiomqtt.ProtocolVersion.V311) as c:
            await c.publish(f"{P}/pod-02/state", b'{"forged": true}', qos=1)  # hostd-2's pod: denied
            await c.publish(f"{P}/pod-01/state", b'{"own": true}', qos=1)  # its own pod: allowed
            await c.publish("hypnolum/v1/hosts/hostd-2/availability", b"offline", qos=1)  # another host: denied
            await c.publish("hypnolum/v1/hosts/hostd-1/state", b"{}", qos=1)  # its own host: allowed
        await wait_until(lambda: watch.json(f"{P}/pod-01/state") == {"own": True}, what="own pod's state")
        await wait_until(lambda: "hypnolum/v1/hosts/hostd-1/state" in watch.latest, what="own host state")
        assert f"{P}/pod-02/state" not in watch.latest
        assert "hypnolum/v1/hosts/hostd-2/availability" not in watch.latest


async def test_only_the_operator_may_publish_a_firmware_update(secure):
    async with Watcher(secure.port, (f"{P}/pod-01/update",), username="hostd-1", password=USERS["hostd-1"],
                       tls_context=tls(secure.ca.ca_file)) as watch:
        for user in ("controller", "experimenter", "hostd-2", "operator"):  # the operator's last: it arrives
            async with client(secure, user, protocol=aiomqtt.ProtocolVersion.V311) as c:
                await c.publish(f"{P}/pod-01/update", json.dumps({"from": user}).encode(), qos=1)
        await wait_until(lambda: f"{P}/pod-01/update" in watch.latest, what="the operator's update")
        assert watch.all_json(f"{P}/pod-01/update") == [{"from": "operator"}]


async def test_hostd_over_tls_with_password_file_and_client_cert_serves_commands_idempotently(secure, tmp_path):
    pw_file = tmp_path / "hostd-1.password"
    pw_file.write_text(USERS["hostd-1"] + "\n")
    cert, key = secure.client_cert
    h = Hostd(tmp_path, secure.port, host_id="hostd-1", mqtt_extra=(
        f'username = "hostd-1"\npassword_file = "{pw_file}"\ntls = true\nca_file = "{secure.ca.ca_file}"\n'
        f'cert_file = "{cert}"\nkey_file = "{key}"\nprotocol = "5"\n'))
    ctl_tls = tls(secure.ca.ca_file)
    async with Watcher(secure.port, ("hypnolum/v1/#", "homeassistant/#"), username="controller",
                       password=USERS["controller"], tls_context=ctl_tls, protocol=aiomqtt.ProtocolVersion.V5) as watch:
        h.start()
        pod = FakePod(h.pods_dir / "pod0.tty", pod_id="pod-01")
        pod.plug()
        try:
            await wait_until(lambda: watch.text(f"{P}/pod-01/availability") == "online", timeout=10, what="pod online")
            await wait_until(lambda: watch.text("hypnolum/v1/hosts/hostd-1/availability") == "online", what="host online")
            # Home Assistant discovery under the host's own id (allowed by the %u pattern)
            await wait_until(lambda: "homeassistant/light/hostd-1/pod-01_light/config" in watch.latest, what="discovery")
            # an MQTT 5 request: result on the response topic with the correlation data
            reply_topic = "hypnolum/v1/replies/controller/pod-01/r1"
            async with client(secure, "controller", protocol=aiomqtt.ProtocolVersion.V5) as ctl:
                await ctl.subscribe(reply_topic, qos=1)
                props = Properties(PacketTypes.PUBLISH)
                props.ResponseTopic = reply_topic
                props.CorrelationData = b"corr-42"
                cmd = {"id": f"c-{uuid.uuid4().hex[:8]}", "scene": {"effect": "solid", "color": [1, 2, 3]}}
                await ctl.publish(f"{P}/pod-01/set", json.dumps(cmd).encode(), qos=1, properties=props)
                await ctl.publish(f"{P}/pod-01/set", json.dumps(cmd).encode(), qos=1, properties=props)  # repeated id
                replies = []
                async with asyncio.timeout(10):
                    async for msg in ctl.messages:
                        replies.append((json.loads(msg.payload), msg.properties.CorrelationData))
                        if len(replies) == 2:
                            break
            assert [r[1] for r in replies] == [b"corr-42", b"corr-42"]
            first, second = sorted((r[0] for r in replies), key=lambda r: r.get("duplicate", False))
            assert first == {"id": cmd["id"], "ok": True, "ack": "ok"}
            assert second == {**first, "duplicate": True}
            assert len([f for _s, f in pod.scenes if f["color"] == [1, 2, 3]]) == 1  # the pod got it once
            # the experimenter's participant code and marker reach hostd, and its answers come back
            async with client(secure, "experimenter") as exp:
                await exp.publish(f"{P}/pod-01/participant", b'{"participant": "P017"}', qos=1)
                await exp.publish(f"{P}/pod-01/marker", b'{"text": "lights out"}', qos=1)
            await wait_until(lambda: watch.json(f"{P}/pod-01/participant/result") == {"ok": True, "participant": "P017"},
                             what="participant result")
            await wait_until(lambda: f"{P}/pod-01/marker/result" in watch.latest, what="marker result")
            # every connection of hostd got in under its own user: main, circles, the pod's availability
            log = secure.log_tail(200000)
            for client_id in ("hypnolum-hostd-1", "hypnolum-hostd-1-circles", "hypnolum-hostd-1-pod-pod-01"):
                assert f" as {client_id} " in log, client_id
            assert 'belong to user "hostd-1"' not in log and "hypnolum-hostd-1 already connected" not in log
        finally:
            h.kill()
            pod.unplug()
        assert "Traceback" not in h.log_text()
