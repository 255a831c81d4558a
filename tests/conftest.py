"""Shared fixtures. ``mosquitto``: a private broker for one test (``.port``, ``.stop()``, ``.start()``)."""
from __future__ import annotations

import pytest

from hypnolum.broker import PrivateBroker


@pytest.fixture
def mosquitto(tmp_path):
    broker = PrivateBroker(tmp_path / "mosquitto").start()
    yield broker
    broker.stop()
