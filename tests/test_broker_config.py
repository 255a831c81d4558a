"""The shipped broker configuration locks the door: each test runs a finding against the
shipped mosquitto config, ACL and client-id plugin (tests/test_mqtt_secure.py starts them on
a free loopback port with a throw-away CA), as the user meant to do it and as a wrong one.

A refused publish is seen as the broker's MQTT 5 PUBACK reason code; a message withheld
from a reader is seen as missing when a later message of the same publisher, which that
reader may read, has arrived (the broker delivers one publisher's messages in order)."""
from __future__ import annotations

import asyncio
import json

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from helpers.mqtt_watch import Watcher
from helpers.wait import wait_until
from test_mqtt_secure import USERS, close_secure_broker, secure_broker, tls

pytestmark = pytest.mark.broker

V1 = "hypnolum/v1"
POD1, POD2 = f"{V1}/pods/pod-01", f"{V1}/pods/pod-02"  # pod-01 is wired to hostd-1, pod-02 to hostd-2
OK, NOT_AUTHORIZED = 0, 0x87  # PUBACK reason codes


@pytest.fixture(scope="module")
def broker():
    b = secure_broker()
    yield b
    close_secure_broker(b)


class Peer(Watcher):
    """An MQTT 5 client of the shipped broker, logged in as ``user``: what it received, and
    the broker's answer to each of its publishes."""

    def __init__(self, broker, user: str, identifier: str | None = None, filters: tuple[str, ...] = (),
                 protocol: aiomqtt.ProtocolVersion = aiomqtt.ProtocolVersion.V5, **kw):
        super().__init__(broker.port, filters)
        self.user = user
        self.client = aiomqtt.Client("127.0.0.1", broker.port, username=user, password=USERS[user],
                                     identifier=identifier, protocol=protocol,
                                     tls_context=tls(broker.ca.ca_file), timeout=5, **kw)
        self._reason: int | None = None
        inner = self.client._client.on_publish  # aiomqtt drops the PUBACK's reason code: note it first

        def on_publish(client, userdata, mid, reason_code, properties):
            self._reason = reason_code.value
            inner(client, userdata, mid, reason_code, properties)

        self.client._client.on_publish = on_publish

    async def publish(self, topic: str, payload: bytes | str = b"{}", retain: bool = False,
                      properties: Properties | None = None) -> int:
        """Publish at QoS 1; OK if the broker accepted it (with or without subscribers),
        else its reason code."""
        self._reason = None
        await self.client.publish(topic, payload, qos=1, retain=retain, properties=properties)
        return OK if self._reason < 0x80 else self._reason

    @property
    def received(self) -> list[tuple[str, bytes]]:
        """(topic, payload) of every message, in order."""
        return [(m.topic.value, bytes(m.payload)) for m in self.messages]

    def got(self, topic: str) -> list[bytes]:
        return self.history.get(topic, [])

    async def wait_for(self, topic: str, what: str = "") -> bytes:
        await wait_until(lambda: self.got(topic), what=what or f"{topic} at {self.user}")
        return self.got(topic)[-1]


async def refused(broker, user: str, identifier: str | None) -> str | None:
    """None if ``user`` may connect with ``identifier``, else the broker's refusal."""
    try:
        async with Peer(broker, user, identifier):
            return None
    except aiomqtt.MqttError as exc:
        return str(exc)


# -- the configuration itself -----------------------------------------------------------------

async def test_the_shipped_config_starts_without_errors_or_warnings(broker):
    log = broker.log_tail(100000).splitlines()
    startup = log[:next((i for i, line in enumerate(log) if "onnect" in line), len(log))]
    assert not [line for line in startup if "rror" in line or "arning" in line], startup


# -- client ids -------------------------------------------------------------------------

async def test_no_other_user_can_take_over_hostds_client_id(broker):
    async with Peer(broker, "hostd-1", "hypnolum-hostd-1", (f"{V1}/pods/+/set",)) as host, \
            Peer(broker, "experimenter") as exp:
        for user, stolen in (("controller", "hypnolum-hostd-1"), ("hostd-2", "hypnolum-hostd-1"),
                             ("experimenter", "hypnolum-hostd-1-pod-pod-01"), ("controller", "hostd-1")):
            assert "authori" in (await refused(broker, user, stolen) or "").lower(), (user, stolen)
        # hostd-1's connection was never knocked off: it still gets its commands
        assert await exp.publish(f"{POD1}/set", b'{"id": "after"}') == OK
        assert await host.wait_for(f"{POD1}/set") == b'{"id": "after"}'
        assert "Client hypnolum-hostd-1 already connected" not in broker.log_tail(100000)


async def test_a_host_keeps_its_several_connections_and_apps_their_own_ids(broker):
    ids = ("hypnolum-hostd-1", "hypnolum-hostd-1-circles", "hypnolum-hostd-1-pod-pod-01")
    async with Peer(broker, "hostd-1", ids[0]) as main, Peer(broker, "hostd-1", ids[1]) as circles, \
            Peer(broker, "hostd-1", ids[2]) as pod_link, Peer(broker, "controller", "controller-dashboard") as app, \
            Peer(broker, "controller") as assigned:  # no id sent: the broker names it auto-<uuid>
        for peer in (main, circles, pod_link, app, assigned):  # all still connected, none took another's place
            topic = f"{V1}/hosts/hostd-1/state" if peer not in (app, assigned) else f"{POD1}/set"
            assert await peer.publish(topic) == OK


# -- who may publish and read what -------------------------------------------------------

POD_INPUTS = tuple(f"{V1}/pods/+/{leaf}" for leaf in ("set", "marker", "participant"))


async def test_commands_markers_and_participant_codes_reach_only_the_pods_host(broker):
    async with Peer(broker, "hostd-1", filters=POD_INPUTS) as host1, Peer(broker, "hostd-2", filters=POD_INPUTS) as host2, \
            Peer(broker, "experimenter", filters=(f"{V1}/pods/#",)) as exp, Peer(broker, "controller") as ctl:
        # the experimenter's marker, participant code and command reach the pod's host
        for leaf in ("marker", "participant", "set"):
            assert await exp.publish(f"{POD1}/{leaf}", f'"{leaf} for pod-01"') == OK
        assert await exp.publish(f"{POD2}/set", b'"for pod-02"') == OK  # hostd-2 reads this one
        for leaf in ("marker", "participant", "set"):
            assert await host1.wait_for(f"{POD1}/{leaf}") == f'"{leaf} for pod-01"'.encode()
        await host2.wait_for(f"{POD2}/set")
        assert [t for t, _ in host2.received] == [f"{POD2}/set"]  # never another host's pod's inputs
        # Home Assistant may command the lights, but neither annotate recordings nor name participants
        assert await ctl.publish(f"{POD1}/set") == OK
        assert await ctl.publish(f"{POD1}/marker") == NOT_AUTHORIZED
        assert await ctl.publish(f"{POD1}/participant") == NOT_AUTHORIZED
        # a host answers for its own pods only, and injects nothing into another host's
        assert await host1.publish(f"{POD1}/marker/result", b'{"ok": true}') == OK
        assert await exp.wait_for(f"{POD1}/marker/result") == b'{"ok": true}'
        for leaf in ("marker/result", "participant/result", "set/result", "state", "marker", "set"):
            assert await host2.publish(f"{POD1}/{leaf}", b'{"forged": true}') == NOT_AUTHORIZED, leaf
        assert await host1.publish(f"{POD1}/participant/result", b'{"ok": true}') == OK
        await exp.wait_for(f"{POD1}/participant/result")
        assert b'{"forged": true}' not in [p for _t, p in exp.received]


async def test_circles_are_defined_by_the_experimenter_and_read_by_every_host(broker):
    circle = f"{V1}/circles/c1"
    circle_topics = (f"{V1}/circles/+/definition", f"{V1}/circles/+/timeline")
    definition = json.dumps({"pods": ["pod-01", "pod-02"], "group_id": 1}).encode()
    async with Peer(broker, "experimenter") as exp, Peer(broker, "controller", filters=(f"{V1}/#",)) as ctl:
        assert await exp.publish(f"{circle}/definition", definition, retain=True) == OK
        assert await exp.publish(f"{circle}/timeline", b'{"events": []}', retain=True) == OK
        try:
            async with Peer(broker, "hostd-1", filters=circle_topics) as host1, \
                    Peer(broker, "hostd-2", filters=(*circle_topics, f"{POD1}/eeg")) as host2:
                for host in (host1, host2):  # retained: each host gets them when it subscribes
                    assert await host.wait_for(f"{circle}/definition") == definition
                    await host.wait_for(f"{circle}/timeline")
                # nobody else may define or reschedule a circle
                for peer in (ctl, host1):
                    assert await peer.publish(f"{circle}/definition", b'{"pods": ["#"]}', retain=True) == NOT_AUTHORIZED
                    assert await peer.publish(f"{circle}/timeline", b"[[[[", retain=True) == NOT_AUTHORIZED
                # a circle host reads the raw EEG of a pod on another host; only that host writes it
                assert await host1.publish(f"{POD1}/eeg", b'{"seq": 1}') == OK
                assert await host2.wait_for(f"{POD1}/eeg") == b'{"seq": 1}'
                assert await ctl.publish(f"{POD1}/eeg", b'{"seq": 2}') == NOT_AUTHORIZED
                # each host publishes the group values under its own id
                assert await host1.publish(f"{circle}/group/hostd-1", b'{"value": 7}') == OK
                assert await host1.publish(f"{circle}/group/hostd-2", b'{"value": 0}') == NOT_AUTHORIZED
                await ctl.wait_for(f"{circle}/group/hostd-1")
                assert ctl.got(f"{circle}/group/hostd-2") == []
            async with Peer(broker, "hostd-2", filters=circle_topics) as fresh:  # the forgeries were not retained
                assert await fresh.wait_for(f"{circle}/definition") == definition
                assert await fresh.wait_for(f"{circle}/timeline") == b'{"events": []}'
        finally:
            await exp.publish(f"{circle}/definition", b"", retain=True)  # clear the retained topics
            await exp.publish(f"{circle}/timeline", b"", retain=True)


async def test_only_the_pods_host_answers_on_a_requesters_reply_topic(broker):
    reply = f"{V1}/replies/controller/pod-01/r1"
    async with Peer(broker, "controller", filters=(f"{V1}/replies/controller/#",)) as ctl, \
            Peer(broker, "experimenter", filters=(f"{V1}/replies/#",)) as exp, \
            Peer(broker, "hostd-1") as host1, Peer(broker, "hostd-2") as host2:
        assert await host2.publish(reply, b'{"forged": true}') == NOT_AUTHORIZED  # not its pod
        assert await ctl.publish(f"{V1}/replies/experimenter/pod-01/r1", b'{"forged": true}') == NOT_AUTHORIZED
        props = Properties(PacketTypes.PUBLISH)
        props.CorrelationData = b"corr-1"
        assert await host1.publish(reply, b'{"ok": true}', properties=props) == OK
        assert await ctl.wait_for(reply) == b'{"ok": true}'
        assert await host2.publish(f"{V1}/replies/controller/pod-02/r2", b'{"ok": true}') == OK
        await ctl.wait_for(f"{V1}/replies/controller/pod-02/r2")
        assert [p for _t, p in ctl.received] == [b'{"ok": true}'] * 2  # no forgery among them
        assert exp.received == []  # another application's replies are not for it


async def test_only_hosts_publish_discovery_and_host_topics_under_their_own_id(broker):
    light = "homeassistant/light/{}/pod-01_light/config"
    async with Peer(broker, "controller", filters=("homeassistant/#", f"{V1}/hosts/#")) as ctl, \
            Peer(broker, "experimenter") as exp, Peer(broker, "hostd-1") as host1, Peer(broker, "hostd-2") as host2:
        assert await ctl.publish(light.format("controller"), b'{"name": "fake"}', retain=True) == NOT_AUTHORIZED
        assert await exp.publish(light.format("experimenter"), b'{"name": "fake"}', retain=True) == NOT_AUTHORIZED
        assert await host2.publish(light.format("hostd-1"), b'{"name": "fake"}', retain=True) == NOT_AUTHORIZED
        assert await ctl.publish(f"{V1}/hosts/controller/availability", b"online", retain=True) == NOT_AUTHORIZED
        assert await host2.publish(f"{V1}/hosts/hostd-1/availability", b"offline", retain=True) == NOT_AUTHORIZED
        assert await host1.publish(light.format("hostd-1"), b'{"name": "pod-01"}') == OK
        assert await host1.publish(f"{V1}/hosts/hostd-1/state", b"{}") == OK
        await ctl.wait_for(f"{V1}/hosts/hostd-1/state")
        assert ctl.received == [(light.format("hostd-1"), b'{"name": "pod-01"}'), (f"{V1}/hosts/hostd-1/state", b"{}")]


# -- limits ----------------------------------------------------------------------------------

async def test_a_payload_over_64_kib_is_refused_by_the_broker(broker):
    limit = 64 * 1024  # hostd's default [mqtt] max_payload
    # MQTT 3.1.1: the broker acknowledges an oversized message (no reason codes) and drops it.
    # (To an MQTT 5 publisher it answers "packet too large".)
    async with Peer(broker, "hostd-1", filters=(f"{POD1}/set",)) as host, \
            Peer(broker, "experimenter", protocol=aiomqtt.ProtocolVersion.V311) as exp:
        await exp.publish(f"{POD1}/set", b"x" * (limit + 1))
        await exp.publish(f"{POD1}/set", b"y" * limit)
        await host.wait_for(f"{POD1}/set")
        assert [len(p) for p in host.got(f"{POD1}/set")] == [limit]
        # far larger: not even read; the sender is cut off, so it gets no acknowledgement
        with pytest.raises(aiomqtt.MqttError):
            await exp.client.publish(f"{POD1}/set", b"z" * (1024 * 1024), qos=1, timeout=3)
        with pytest.raises(aiomqtt.MqttError):
            await exp.client.publish(f"{POD1}/set", b"{}", qos=1, timeout=3)
        assert [len(p) for p in host.got(f"{POD1}/set")] == [limit]


async def test_a_burst_of_10000_commands_is_queued_for_a_host_not_dropped(broker):
    burst = 10_000
    session = Properties(PacketTypes.CONNECT)
    session.SessionExpiryInterval = 300

    def host() -> Peer:
        return Peer(broker, "hostd-1", "hypnolum-hostd-1-burst", (f"{POD1}/set",), clean_start=False,
                    properties=session)

    async with host():
        pass  # the session (its subscription) stays on the broker while the host is away
    async with Peer(broker, "experimenter", max_inflight_messages=1000) as exp:
        exp.client.pending_calls_threshold = burst  # aiomqtt warns of many concurrent publishes
        await asyncio.gather(*(exp.client.publish(f"{POD1}/set", b'{"id": "c%d"}' % i, qos=1) for i in range(burst)))
    async with host() as back:
        await wait_until(lambda: len(back.received) >= burst, timeout=30, what=f"{burst} queued commands")
        assert len({p for _t, p in back.received}) == burst
    async with Peer(broker, "hostd-1", "hypnolum-hostd-1-burst", clean_start=True):
        pass  # end the session


