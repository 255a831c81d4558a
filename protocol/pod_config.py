"""pod.json, the pod's provisioning config: every key, defined once.

A technician writes pod.json at flashing (hypnolum/flash/); the pod reads it at
boot (firmware/pod/config.py) and takes its default, with a warning over the
link, for any key it refuses; the emulator writes one per emulated pod. This
module is the specification of the keys; protocol/gen_pod_config.py compiles
it into the pod's tables (firmware/pod/config_schema.py), the host's typed model
(protocol/pod_json.py, used by the flash tool and the emulator) and the key
table of docs/pod-config.md. ``problem`` is the host's check of one value; the
pod's loop says the same words (tests/test_pod_config.py runs both on every
bound).

Kinds of key:
  INT     an integer within low..high (JSON true/false is not one)
  BOOL    true or false
  CHOICE  one of a few strings
  TEXT    a string of low..high characters, starting with one of ``first``,
          holding only ``chars``; ``rule`` says the same in pattern notation

A key's default is a value, ``Board(CONST)`` (the pod board's constant in
firmware/pod/board.py: the pod takes it when pod.json leaves the key out), or
None (pod_id: derived on the pod from its unique id). Safety limits are what
the pod's light governor holds the strips to; they are set at provisioning
only, never by a host command.
"""
from __future__ import annotations

import dataclasses
import json
import string
from dataclasses import dataclass

INT = "int"
BOOL = "bool"
CHOICE = "choice"
TEXT = "text"

SHOW_MAX = 40  # a refused value is shown as its repr, cut to this many characters

_ID_FIRST = string.digits + string.ascii_uppercase + string.ascii_lowercase
_ID_CHARS = _ID_FIRST + "_-"


@dataclass(frozen=True)
class Board:
    """A default the pod's board gives: the constant ``name`` of firmware/pod/board.py."""

    name: str


Default = int | bool | str | Board | None


@dataclass(frozen=True)
class Key:
    name: str
    kind: str
    default: Default
    doc: str  # one line: what the key sets
    low: int = 0  # INT: the lowest value; TEXT: the fewest characters
    high: int = 0  # INT: the highest value; TEXT: the most characters
    choices: tuple[str, ...] = ()  # CHOICE
    first: str = ""  # TEXT: the characters a value may start with
    chars: str = ""  # TEXT: the characters it may hold
    rule: str = ""  # TEXT: first and chars in pattern notation, for messages
    unit: str = ""
    safety: bool = False  # a safety limit of the light path

    @property
    def pod_decides(self) -> bool:
        """True if leaving the key out gives a value only the pod knows (its board's, or pod_id)."""
        return self.default is None or isinstance(self.default, Board)

    def allowed(self) -> str:
        """What the key takes, in words: ``1..300``, ``one of GRB RGB``, ..."""
        if self.kind == INT:
            return f"{self.low}..{self.high}"
        if self.kind == BOOL:
            return "true or false"
        if self.kind == CHOICE:
            return "one of " + " ".join(self.choices)
        return f"{self.low}..{self.high} characters of {self.rule}"

    def default_text(self) -> str:
        """The default in words: ``16``, ``false``, ``board.LED_LIMIT_MA``, ``pod-<unique id hex>``."""
        if isinstance(self.default, Board):
            return f"board.{self.default.name}"
        if self.default is None:
            return "pod-<unique id hex>"
        if isinstance(self.default, bool):
            return "true" if self.default else "false"
        return str(self.default)


_ORDERS = ("RGB", "RBG", "GRB", "GBR", "BRG", "BGR")
_ORDERS_W = ("RGBW", "GRBW", "BRGW", "WRGB", "WGRB")  # RGBW strips

KEYS: tuple[Key, ...] = (
    Key("pod_id", TEXT, None, "the pod's name on the link, in MQTT topics and in file names", 1, 64, first=_ID_FIRST, chars=_ID_CHARS,
        rule="[A-Za-z0-9][A-Za-z0-9_-]*"),
    Key("led_count", INT, 16, "LEDs on the strip", 1, 300, unit="LEDs"),
    Key("led_type", CHOICE, "ws2812", "LED chip: sets the wire protocol",
        choices=("ws2812", "sk6812", "sk6812_rgbw", "apa102", "sk9822")),
    Key("led_order", CHOICE, "GRB", "colour order on the wire; 4 letters with W for RGBW strips",
        choices=_ORDERS + _ORDERS_W),
    Key("headset", CHOICE, "cyton", "EEG headset on the pod's UART", choices=("cyton", "none")),
    Key("eeg_channels", INT, 8, "EEG channels: 9..16 with the Cyton's Daisy board", 1, 16),
    Key("sample_rate_hz", INT, 250, "samples per second per channel (125 with the Daisy)", 1, 16000, unit="Hz"),
    Key("headset_baud", INT, 115200, "the headset UART's baud rate", 1200, 4000000, unit="baud"),
    Key("eeg_batch_ms", INT, 40, "EEG sent every this many ms; 12 for pods in a circle whose light "
        "follows the group (docs/circles.md)", 4, 40, unit="ms"),
    Key("usb_link", CHOICE, "cdc", "the pod link's USB function: a CDC-ACM tty (serial transport) or a vendor "
        "interface (USB transport); the S3 has endpoints for one beside the REPL (docs/transports.md)",
        choices=("cdc", "vendor")),
    Key("render_fps", INT, 60, "frames the light renders per second", 1, 200, unit="frames/s"),
    Key("watchdog_ms", INT, 5000, "the hardware watchdog's timeout", 1000, 60000, unit="ms"),
    Key("led_ma", INT, Board("LED_MA_PER_CHANNEL"), "current one colour channel of one LED draws at full duty",
        1, 200, unit="mA", safety=True),
    Key("led_idle_ma", INT, Board("LED_IDLE_MA_PER_LED"), "current one dark LED draws (its controller)",
        0, 20, unit="mA", safety=True),
    Key("psu_ma", INT, Board("LED_LIMIT_MA"), "current the LED supply may give the strips: the governor "
        "keeps their estimated draw under it", 100, 100000, unit="mA", safety=True),
    Key("board_reserve_ma", INT, 0, "current kept back from psu_ma for other loads on the same supply",
        0, 10000, unit="mA", safety=True),
    Key("brightness_max", INT, 255, "cap on every colour channel (sRGB byte)", 0, 255, safety=True),
    Key("night_brightness_max", INT, 64, "cap on every channel while night mode holds", 0, 255, safety=True),
    Key("night_green_max", INT, 96, "cap on green while night mode holds", 0, 255, safety=True),
    Key("night_blue_max", INT, 12, "cap on blue while night mode holds", 0, 255, safety=True),
    Key("fade_after_ms", INT, 2000, "link silence after which the pod fades to its safe glow", 200, 600000,
        unit="ms", safety=True),
    Key("ble", BOOL, False, "the pod link over BLE too (a bonded host; docs/transports.md, BLE)"),
    Key("ble_pair_s", INT, 120, "how long the BLE pairing window stays open after a boot that found "
        "ble_pair.flag", 10, 3600, unit="s"),
    Key("strobe_enabled", BOOL, False, "8-13 Hz strobe effects may run at all (a scene must still opt in)",
        safety=True),
)
BY_NAME: dict[str, Key] = {k.name: k for k in KEYS}


def show(value: object) -> str:
    """A refused value as a message shows it: its repr in ASCII, cut to SHOW_MAX characters.
    MicroPython's repr of a str escapes all but 32..126 as ascii() does (\\t, \\xNN,
    \\uNNNN, \\UNNNNNNNN: py/objstrunicode.c:42-84 in v1.28.0), so the pod's words match."""
    text = ascii(value)
    return text if len(text) <= SHOW_MAX else text[:SHOW_MAX - 3] + "..."


def _refusal(key: Key, value: object) -> str:
    """Why ``value`` is refused for ``key`` ("" if it is taken), after the key's name."""
    if key.kind == BOOL:
        return "" if isinstance(value, bool) else " is not true or false"
    if key.kind == INT:
        if not isinstance(value, int) or isinstance(value, bool):
            return " is not an integer"
        return "" if key.low <= value <= key.high else f" is outside {key.low}..{key.high}"
    if not isinstance(value, str):
        return " is not a string"
    if key.kind == CHOICE:
        return "" if value in key.choices else " is not one of " + " ".join(key.choices)
    if not key.low <= len(value) <= key.high:
        return f" is not {key.low}..{key.high} characters long"
    if value[0] not in key.first or any(c not in key.chars for c in value):
        return " does not match " + key.rule
    return ""


def problem(name: str, value: object) -> str:
    """Why pod.json's ``name: value`` is refused, naming the key, the value and what is
    allowed; "" if it is taken. The pod's own check says the same words."""
    key = BY_NAME.get(name)
    if key is None:
        return f"{show(name)} is not a pod.json key"
    why = _refusal(key, value)
    return f"{name}: {show(value)}{why}" if why else ""


class PodJsonError(ValueError):
    """Values pod.json cannot hold; the message names each key, value and what is allowed."""


class Values:
    """What protocol/pod_json.py's generated ``PodJson`` does with its fields: check them
    and write pod.json. A field left None (pod_id, and the keys whose default is the
    board's) and a field at the pod's default are left out: the pod takes its own."""

    def problems(self) -> list[str]:
        """Every value refused, in the words of ``problem``."""
        found = []
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            key = BY_NAME.get(f.name)
            if value is None and key is not None and key.pod_decides:
                continue
            if why := problem(f.name, value):
                found.append(why)
        return found

    def check(self) -> None:
        """Raise PodJsonError naming every refused value."""
        if found := self.problems():
            raise PodJsonError("; ".join(found))

    def __post_init__(self) -> None:
        self.check()

    def values(self) -> dict[str, object]:
        """The keys pod.json holds: those set to other than the pod's default."""
        out = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value is not None and value != BY_NAME[f.name].default:
                out[f.name] = value
        return out

    def to_json(self) -> str:
        """pod.json's text, checked again (a field may have changed since construction)."""
        self.check()
        return json.dumps(self.values(), indent=1, sort_keys=True) + "\n"
