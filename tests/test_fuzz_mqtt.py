"""A short run of the MQTT fuzzer against a running hostd (the long one is bench/fuzz_mqtt.py).

Hypothesis draws a few hundred hostile payloads for every topic hostd
subscribes to; they go through the test's mosquitto to ``hypnolum hostd`` running
as a process with one emulated pod (tests/helpers/fuzz_hostd.py). hostd must
not end, must answer every barrier, and must still answer a good command
``ok`` at the end. A failure shows the payload that ended it, hostd's exit
status and its last log lines.
"""
from __future__ import annotations

import pytest

from helpers.fuzz_hostd import FuzzRig, fuzz, summary
from helpers.fuzz_payloads import KINDS, LEAVES

pytestmark = [pytest.mark.broker, pytest.mark.micropython]

COUNT = 400


async def test_hostile_payloads_on_every_topic_never_stop_hostd(tmp_path, mosquitto):
    async with FuzzRig(tmp_path, mosquitto.port) as rig:
        report = await fuzz(rig, COUNT, seed=13, max_crashes=1)
    text = summary(report)
    print(text)
    assert len(report.crashes) == 0, text
    assert report.sent == COUNT, text
    assert report.good_ms is not None, text
    # every topic and every kind of payload was reached
    assert set(report.by_leaf) == set(LEAVES), text
    assert set(report.by_kind) == set(KINDS), text
