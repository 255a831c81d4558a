"""The light and protocol docs say what the code does: effect periods, pod.json defaults, messages.

docs/light.md's effect table against protocol/messages.py EFFECT_PERIODS (the one
home of each effect's period range and default); its pod.json key list against
the defaults the firmware really takes (protocol/pod_config.py, with the
board's constants from firmware/pod/board.py, read as source: they are
MicroPython); docs/protocol.md's message tables against protocol/messages.py.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

from hypnolum.protocol.messages import EFFECT_PERIODS, MESSAGES
from hypnolum.protocol.pod_config import KEYS, Board

ROOT = Path(__file__).resolve().parent.parent
LIGHT = (ROOT / "docs" / "light.md").read_text()
PROTOCOL = (ROOT / "docs" / "protocol.md").read_text()


def _board_consts() -> dict[str, int]:
    tree = ast.parse((ROOT / "firmware" / "pod" / "board.py").read_text())
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) and getattr(node.value.func, "id", "") == "const":
            out[node.targets[0].id] = ast.literal_eval(node.value.args[0])
    return out


def firmware_light_defaults() -> dict[str, object]:
    """pod.json's safety limits -> the default the pod takes (protocol/pod_config.py; a board
    default is the constant of firmware/pod/board.py)."""
    board = _board_consts()
    return {k.name: board[k.default.name] if isinstance(k.default, Board) else k.default for k in KEYS if k.safety}


def test_the_effect_table_gives_each_effects_period_range_and_default():
    rows = dict(re.findall(r"^\| `(\w+)` \| ([^|]+) \|", LIGHT, re.M))
    assert set(rows) == set(EFFECT_PERIODS), set(rows) ^ set(EFFECT_PERIODS)
    for name, period in EFFECT_PERIODS.items():
        cell = rows[name].strip()
        if period is None:
            assert cell == "–", (name, cell)
            continue
        m = re.fullmatch(r"(\d+)\.\.(\d+)(?: \([^)]*\))?; (\d+)", cell)
        assert m, (name, cell)
        assert tuple(int(x) for x in m.groups()) == period, (name, cell, period)


def test_pod_json_defaults_in_light_md_are_the_firmwares():
    para = LIGHT[LIGHT.index("pod.json keys (docs/pod-config.md)"):]
    para = para[:para.index("\n\n")]
    defaults = firmware_light_defaults()
    stated = {}
    for key, value in re.findall(r"`(\w+)` \(([^)]*)\)", para):
        stated[key] = value
    numeric = {k: v for k, v in defaults.items() if isinstance(v, int) and not isinstance(v, bool)}
    assert set(numeric) <= set(stated), set(numeric) - set(stated)
    for key, value in numeric.items():
        said = re.findall(r"\d+", stated[key])
        assert said and int(said[-1]) == value, (key, stated[key], value)
    # the governor's power limit states the budget these defaults give, and the per-output limit
    m = re.search(r"`psu_ma − board_reserve_ma` \((\d+) − (\d+) mA by default\), the per-output (\d+) mA", LIGHT)
    assert m, "docs/light.md's power limit does not state its default budget"
    board = _board_consts()
    assert (int(m[1]), int(m[2]), int(m[3])) == (defaults["psu_ma"], defaults["board_reserve_ma"],
                                                  board["LED_LIMIT_MA_PER_OUTPUT"])


def test_protocol_md_lists_every_message_with_its_id():
    listed = dict(re.findall(r"^\| (0x[0-9a-f]{2}) \| (\w+) \|", PROTOCOL, re.M))
    want = {f"{type_id:#04x}": name for name, type_id, _ in MESSAGES}
    assert listed == want, set(listed.items()) ^ set(want.items())
