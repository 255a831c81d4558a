"""Fuzz the pod's Link and every handler behind it under micropython, and judge the result.

Runs tests/helpers/fuzz_link_mpy.py under the real 32-bit interpreter (the
firmware and the emulator's HAL on MICROPYPATH) and checks what it reports:

* no exception out of the link or the render loop (each one with its message
  type, payload and traceback);
* the answer rules the driver checks (every command answered once, ACK or
  NACK; non-commands unanswered unless their payload is bad; unhandled types
  NACKed unknown_type; no strobe accepted without strobe_enabled);
* against the host codec (protocol/codec.py, written separately from the
  firmware's generated wire.py): a payload it cannot decode is NACKed
  bad_message by the pod, and one it can is not;
* the rendered frames against tests/helpers/flash_analyzer.py: flashes per
  1-s window, the current budget and the brightness cap.
"""
from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hypnolum.protocol import codec
from hypnolum.protocol.messages import COMMANDS

from helpers import flash_analyzer as fa

ROOT = Path(__file__).resolve().parents[2]
DRIVER = ROOT / "tests" / "helpers" / "fuzz_link_mpy.py"
APP = ROOT / "firmware" / "pod" / "app.py"
TRANSFER = ROOT / "firmware" / "pod" / "transfer.py"  # the update messages, registered by app.py through it
from helpers.light_rig import BUDGET_MA, CONFIG, N_LEDS  # noqa: E402
NACK_BAD_MESSAGE = "nack:1"
_COMMAND_IDS = {codec.BY_NAME[name].type_id for name in COMMANDS}
SHOWN = 10  # examples kept per kind of problem


@dataclass
class LinkFuzz:
    messages: int = 0
    frames: int = 0
    seconds_rendered: float = 0.0
    crashes: list[str] = field(default_factory=list)  # each: where, type, payload hex, traceback
    crash_count: int = 0
    violations: list[str] = field(default_factory=list)
    violation_count: int = 0
    disagreements: list[str] = field(default_factory=list)  # pod vs host codec on a payload
    disagreement_count: int = 0
    light: list[str] = field(default_factory=list)  # light-safety limits broken
    answers: Counter = field(default_factory=Counter)  # "<type> <answer>" -> count
    per_type: Counter = field(default_factory=Counter)
    handlers: list[int] = field(default_factory=list)
    replays: int = 0
    stats: dict = field(default_factory=dict)

    @property
    def failures(self) -> int:
        return self.crash_count + self.violation_count + self.disagreement_count + len(self.light)


def micropython() -> str:
    exe = Path(sys.executable).parent / "micropython"
    if not exe.exists():
        raise SystemExit("micropython not found: run `make setup`")
    return str(exe)


def app_registrations() -> set[str]:
    """Message names firmware/pod/app.py registers on its Link (besides Link's own), itself or
    through pod/transfer.py."""
    text = APP.read_text() + TRANSFER.read_text()
    return {m.lower() for m in re.findall(r"\.register(?:_raw)?\(wire\.T_([A-Z_]+)", text)}


def _body(type_id: int, seq: int, payload: bytes) -> bytes:
    body = struct.pack("<BBH", codec.PROTOCOL_VERSION, type_id, seq) + payload
    return body + struct.pack("<I", zlib.crc32(body))


def host_decodes(type_id: int, seq: int, payload: bytes) -> bool:
    try:
        codec.decode_body(_body(type_id, seq, payload))
    except codec.ProtocolError:
        return False
    return True


def _keep(items: list[str], text: str) -> None:
    if len(items) < SHOWN:
        items.append(text)


def _record(out: LinkFuzz, line: str, handlers: set[int]) -> None:
    """One "m" line: the pod's answer against the host codec's reading of the payload."""
    _, t, seq, data, retry, answer = line.split(" ", 5)
    type_id = int(t)
    if type_id not in handlers or (retry == "1" and type_id in _COMMAND_IDS):
        return  # a command's retry is answered as the first time, its payload unread
    payload = bytes.fromhex(data)
    decodes = host_decodes(type_id, int(seq), payload)
    nacked_bad = answer.strip() == NACK_BAD_MESSAGE
    if decodes == nacked_bad:
        out.disagreement_count += 1
        what = "decodes on the host but the pod NACKed it bad_message" if decodes else \
            f"does not decode on the host but the pod answered {answer.strip()}"
        _keep(out.disagreements, f"type {type_id} payload {data}: {what}")


def run(n: int, seed: int = 1, timeout_s: float = 600, firmware: Path = ROOT / "firmware") -> LinkFuzz:
    """Fuzz n messages into the firmware tree ``firmware`` (another tree: to see the fuzz catch a bug)."""
    env = dict(os.environ, MICROPYPATH=os.pathsep.join([str(ROOT / "emulator" / "mpy"), str(firmware),
                                                          str(ROOT / "tests" / "firmware"), ".frozen"]))
    request = {"count": n, "seed": seed, "config": CONFIG, "commands": sorted(_COMMAND_IDS)}
    proc = subprocess.run([micropython(), "-X", "heapsize=8M", str(DRIVER)], input=json.dumps(request) + "\n",
                          capture_output=True, text=True, env=env, cwd=str(ROOT), timeout=timeout_s)
    out = LinkFuzz()
    times: list[int] = []
    rgb: list[bytes] = []
    handlers: set[int] = set()
    for line in proc.stdout.splitlines():
        tag = line[:2]
        if tag == "f ":
            _, ms, data = line.split(" ")
            times.append(int(ms))
            rgb.append(bytes.fromhex(data))
        elif tag == "m ":
            _record(out, line, handlers)
        elif tag == "h ":
            handlers = {int(t) for t in line.split()[1:]}
        elif tag == "v ":
            out.violation_count += 1
            _keep(out.violations, line[2:])
        elif tag == "c ":
            where, t, seq, data = line[2:].split(" ")
            name = codec.BY_TYPE[int(t)].name if int(t) in codec.BY_TYPE else "unknown"
            out.crashes.append(f"exception out of the {where} loop after {name} (type {t}) seq {seq} "
                               f"payload {data or '(empty)'}:")
        elif tag == "| " and out.crashes:
            out.crashes[-1] += "\n" + line[2:]
        elif line.startswith("done "):
            out.stats = json.loads(line[5:])
    if not out.stats:
        raise RuntimeError(f"the fuzz driver died (status {proc.returncode}):\n{proc.stderr[-3000:]}"
                           f"{proc.stdout[-2000:]}")
    s = out.stats
    out.messages, out.frames, out.replays = s["messages"], s["frames"], s["replays"]
    out.crash_count, out.handlers = s["crashes"], s["handlers"]
    out.answers, out.per_type = Counter(s["answers"]), Counter(s["per_type"])
    if times:
        _light(out, np.array(times, dtype=np.int64), rgb)
    return out


def _light(out: LinkFuzz, t: np.ndarray, rgb: list[bytes]) -> None:
    frames = np.frombuffer(b"".join(rgb), dtype=np.uint8).reshape(len(rgb), N_LEDS, 3)
    out.seconds_rendered = float(t[-1]) / 1000
    rep = fa.analyze(t, frames, CONFIG["led_ma"], CONFIG["led_idle_ma"], strict=True)
    out.light = rep.violations(BUDGET_MA, CONFIG["brightness_max"])
