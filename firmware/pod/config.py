"""Pod configuration: pod.json from the pod's filesystem, checked, with defaults.

A bad or missing key never stops the pod: it takes the default and the
problem is kept in Config.errors, which app.py reports over the link.

pod_id follows the one pod id grammar (protocol/ids.py): an ASCII letter or
digit, then up to 63 letters, digits, "_" or "-". Any other id would reach
MQTT topics and file names on the host, so it is refused here too and the
pod takes the id derived from its unique id.
"""
import json

import hal
from pod.light_config import LED_TYPES, SCHEMA as _LIGHT_SCHEMA
from pod.ledwire import ORDERS as _ORDERS, ORDERS_W as _ORDERS_W

FW_VERSION = "0.1.0"

# key: (default, type, low, high); low/high bound ints, or lengths of strings
_SCHEMA = {
    "pod_id": (None, str, 1, 64),  # None: derived from the board's unique id; see is_pod_id
    "led_count": (16, int, 1, 300),
    "led_order": ("GRB", str, 3, 4),  # 4 letters (with W) for RGBW strips
    "eeg_channels": (8, int, 1, 16),  # 9..16: the Cyton with its Daisy
    "sample_rate_hz": (250, int, 1, 16000),  # per channel: 125 with the Daisy
    "headset_baud": (115200, int, 1200, 4000000),
    "eeg_batch_ms": (40, int, 4, 40),  # EEG_BATCH every this many ms: 12 for circle pods (latency)
    "render_fps": (60, int, 1, 200),
    "watchdog_ms": (5000, int, 1000, 60000),
    "headset": ("cyton", str, 1, 16),  # cyton | none
}
# hypnolum/flash/provision.py validates pod.json with these bounds before writing it
_SCHEMA.update(_LIGHT_SCHEMA)

_ID_FIRST = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_ID_REST = _ID_FIRST + "_-"


def is_pod_id(s):
    """True if s is a pod id: [A-Za-z0-9][A-Za-z0-9_-]{0,63}, the whole string."""
    if not isinstance(s, str) or not 1 <= len(s) <= 64 or s[0] not in _ID_FIRST:
        return False
    for c in s:
        if c not in _ID_REST:
            return False
    return True


class Config:
    def __init__(self):
        self.errors = []
        for key, spec in _SCHEMA.items():
            setattr(self, key, spec[0])

    def set(self, key, value):
        """Check and set one key; returns False (and records why) if rejected."""
        spec = _SCHEMA.get(key)
        if spec is None:
            self.errors.append("unknown key " + key)
            return False
        _, kind, low, high = spec
        # bool is an int subclass in CPython, not in MicroPython: keep them apart on both
        if kind is bool:
            ok = value is True or value is False
        else:
            ok = isinstance(value, kind) and not isinstance(value, bool)
        size = len(value) if kind is str and isinstance(value, str) else (low if kind is bool else value)
        if not ok or not low <= size <= high:
            self.errors.append("bad " + key)
            return False
        if key == "led_order" and value not in _ORDERS and value not in _ORDERS_W:
            self.errors.append("bad led_order")
            return False
        if key == "led_type" and value not in LED_TYPES:
            self.errors.append("bad led_type")
            return False
        if key == "pod_id" and not is_pod_id(value):
            self.errors.append("bad pod_id")
            return False
        setattr(self, key, value)
        return True


def default_pod_id(uid):
    return "pod-" + "".join("%02x" % b for b in uid)


def parse(text, uid):
    """Config from the bytes of pod.json (None = absent) and the board's unique id."""
    cfg = Config()
    if text is not None:
        try:
            data = json.loads(text)
        except ValueError:
            data = None
            cfg.errors.append("pod.json is not JSON")
        if data is not None and not isinstance(data, dict):
            cfg.errors.append("pod.json is not an object")
            data = None
        if data:
            for key, value in data.items():
                cfg.set(key, value)
    if cfg.pod_id is None:
        cfg.pod_id = default_pod_id(uid)
    return cfg


def load():
    return parse(hal.read_file("pod.json"), hal.unique_id())
