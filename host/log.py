"""Logging for hostd: stderr, one event per line, "LEVEL logger: message".

journald adds its own timestamps, so none are printed here.
"""
from __future__ import annotations

import logging
import sys

FORMAT = "%(levelname)s %(name)s: %(message)s"


def setup(level: str | int = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # the MQTT client library is chatty at DEBUG; keep our own lines readable
    logging.getLogger("aiomqtt").setLevel(max(logging.getLogger().level, logging.INFO))
