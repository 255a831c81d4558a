"""Shared fixtures. ``mosquitto``: a private broker for one test (``.port``, ``.stop()``, ``.start()``).

The suite runs on two workers (pytest-xdist, `make test`): nothing a test starts may
share a fixed path or port with another's. A demo started by a test tells consoles
where its broker is through a file of this test process, never the user's own."""
from __future__ import annotations

import os
import tempfile

import pytest

from hypnolum.broker import PrivateBroker

os.environ["HYPNOLUM_DEMO_FILE"] = os.path.join(tempfile.mkdtemp(prefix="hypnolum-test-demo-"), "demo.json")


@pytest.fixture
def mosquitto(tmp_path):
    broker = PrivateBroker(tmp_path / "mosquitto").start()
    yield broker
    broker.stop()
