"""Pod configuration: pod.json from the pod's filesystem, checked, with defaults.

The keys, their kinds, bounds and defaults are pod/config_schema.py's tables,
generated from protocol/pod_config.py (docs/pod-config.md). A bad or missing
key never stops the pod: it takes the default and the problem, naming the key,
the value and what is allowed, is kept in Config.errors, which app.py reports
over the link.

pod_id follows the one pod id grammar (protocol/ids.py): an ASCII letter or
digit, then up to 63 letters, digits, "_" or "-". Any other id would reach
MQTT topics and file names on the host, so it is refused here too and the
pod takes the id derived from its unique id.
"""
import json

import hal
from pod.config_schema import K_BOOL, K_CHOICE, K_INT, KEYS, SHOW_MAX

FW_VERSION = "0.1.0"


def _show(value):
    text = repr(value)
    return text if len(text) <= SHOW_MAX else text[:SHOW_MAX - 3] + "..."


def _refusal(spec, value):
    """Why value does not fit spec (after the key's name), or None if it does."""
    kind = spec[1]
    low = spec[2]
    high = spec[3]
    if kind == K_BOOL:
        return None if value is True or value is False else " is not true or false"
    # bool is an int subclass in CPython, not in MicroPython: keep them apart on both
    if kind == K_INT:
        if not isinstance(value, int) or isinstance(value, bool):
            return " is not an integer"
        return None if low <= value <= high else " is outside %d..%d" % (low, high)
    if not isinstance(value, str):
        return " is not a string"
    extra = spec[4]
    if kind == K_CHOICE:
        return None if value in extra else " is not one of " + " ".join(extra)
    if not low <= len(value) <= high:
        return " is not %d..%d characters long" % (low, high)
    if value[0] not in extra[0]:
        return " does not match " + extra[2]
    for c in value:
        if c not in extra[1]:
            return " does not match " + extra[2]
    return None


def problem(key, value):
    """Why pod.json's key: value is refused, naming the key, the value and what is
    allowed; None if it is taken. protocol/pod_config.py's problem says the same."""
    spec = KEYS.get(key)
    if spec is None:
        return _show(key) + " is not a pod.json key"
    why = _refusal(spec, value)
    return None if why is None else key + ": " + _show(value) + why


class Config:
    def __init__(self):
        self.errors = []
        for key, spec in KEYS.items():
            setattr(self, key, spec[0])

    def set(self, key, value):
        """Check and set one key; returns False (and records why) if refused."""
        why = problem(key, value)
        if why is not None:
            self.errors.append(why)
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


def release_schema():
    """Let the schema's tables go once pod.json has been read (pod/app.py, at boot):
    nothing reads pod.json again until the next boot, and they hold ~2.7 KB of the
    heap budget. problem(), Config() and parse() need them: not after this."""
    global KEYS
    KEYS = None
    import sys

    sys.modules.pop("pod.config_schema", None)
