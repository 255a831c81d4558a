"""The pod board's design rules, and the generator of firmware/pod/board.py.

Reads pod.kicad_sch (KiCad 6 S-expressions) into a netlist, pinmap.toml and
power.toml, and checks that they agree with each other, with the ESP32-S3's
pin rules (as the ESP32-S3-WROOM-1-N16R8 module brings them out) and with
bom.csv. tests/test_hardware.py calls the check_* functions one
by one; from a shell:

    python hardware/schematics/check.py            # print every problem, exit 1 if any
    python hardware/schematics/check.py --write    # regenerate firmware/pod/board.py
    python hardware/schematics/check.py --budget   # print the power budget

Standard library only, so a technician's machine can run it too.
"""
from __future__ import annotations

import argparse
import csv
import math
import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SCHEMATIC = HERE / "pod.kicad_sch"
PINMAP = HERE / "pinmap.toml"
POWER = HERE / "power.toml"
BOM = HERE / "bom.csv"
BOARD_PY = ROOT / "firmware" / "pod" / "board.py"

# ESP32-S3-WROOM-1 module pin of each GPIO it brings out (Espressif,
# ESP32-S3-WROOM-1 & -1U datasheet, "Pin Definitions"). GPIO 26-32 (the SPI
# flash) and GPIO 33-34 are not brought out; pin 41 is the exposed GND pad.
WROOM1_PIN = {
    4: 4, 5: 5, 6: 6, 7: 7, 15: 8, 16: 9, 17: 10, 18: 11, 8: 12, 19: 13, 20: 14, 3: 15, 46: 16,
    9: 17, 10: 18, 11: 19, 12: 20, 13: 21, 14: 22, 21: 23, 47: 24, 48: 25, 45: 26, 0: 27,
    35: 28, 36: 29, 37: 30, 38: 31, 39: 32, 40: 33, 41: 34, 42: 35, 44: 36, 43: 37, 2: 38, 1: 39,
}
WROOM1_POWER = {1: "GND", 40: "GND", 41: "GND", 2: "+3V3", 3: "EN"}
FLASH_GPIOS = range(26, 33)          # quad SPI flash inside the module (SPICS1, SPIHD, SPIWP, SPICS0, SPICLK, SPIQ, SPID)
# Octal flash/PSRAM data lines SPIIO4-7 and SPIDQS. The N16R8's 8 MB octal
# PSRAM uses GPIO35-37 (brought out on module pins 28-30, which must stay
# unconnected); 33 and 34 are not brought out. Refused outright: no hold helps.
OCTAL_GPIOS = range(33, 38)
RESERVED_MODULE_PINS = tuple(WROOM1_PIN[g] for g in OCTAL_GPIOS if g in WROOM1_PIN)  # 28, 29, 30
USB_GPIOS = {19: "USB_DN", 20: "USB_DP"}  # the S3's native USB (USB-Serial/JTAG and USB OTG)
ADC1_GPIOS = range(1, 11)            # ADC1_CH0-9; ADC2 (GPIO 11-20) cannot be read while Wi-Fi runs
# Strapping pins and the level each needs at reset for a normal boot from the
# module's 3.3 V flash (ESP32-S3 datasheet, "Strapping Pins"): GPIO0 low with
# GPIO46 low = ROM downloader, GPIO0 high = SPI boot (weak internal pull-up);
# GPIO46 must be low (weak pull-down): GPIO0 low with GPIO46 high is an
# invalid combination, and it also gates the ROM boot log; GPIO45 selects
# VDD_SPI, high = 1.8 V, which browns out the N16R8's 3.3 V flash and PSRAM
# (weak pull-down); GPIO3 picks the JTAG source once EFUSE_STRAP_JTAG_SEL is
# burnt, high = USB-Serial/JTAG (floating by default: a board using it holds it).
STRAPPING = {0: "high", 3: "high", 45: "low", 46: "low"}
RAIL = {"high": "+3V3", "low": "GND"}


# ---------------------------------------------------------------- S-expressions

_TOKEN = re.compile(r'\s*(?:(\()|(\))|"((?:[^"\\]|\\.)*)"|([^\s()"]+))')


def parse_sexpr(text: str) -> list:
    """KiCad S-expression text -> nested lists of str (quoted and bare atoms alike)."""
    stack: list[list] = [[]]
    pos = 0
    end = len(text.rstrip())
    while pos < end:
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ValueError(f"bad S-expression at offset {pos}")
        pos = m.end()
        if m.group(1):
            stack.append([])
        elif m.group(2):
            if len(stack) < 2:
                raise ValueError(f"unbalanced ')' at offset {pos}")
            done = stack.pop()
            stack[-1].append(done)
        elif m.group(3) is not None:
            stack[-1].append(re.sub(r"\\(.)", r"\1", m.group(3)))
        else:
            stack[-1].append(m.group(4))
    if len(stack) != 1 or len(stack[0]) != 1:
        raise ValueError("unbalanced S-expression")
    return stack[0][0]


def _items(node: list, head: str) -> list[list]:
    return [n for n in node if isinstance(n, list) and n and n[0] == head]


def _item(node: list, head: str) -> list | None:
    found = _items(node, head)
    return found[0] if found else None


def _props(node: list) -> dict[str, str]:
    return {p[1]: p[2] for p in _items(node, "property")}


# ---------------------------------------------------------------- netlist

@dataclass
class Part:
    ref: str
    lib_id: str
    value: str
    footprint: str
    props: dict[str, str]
    pins: dict[str, str | None] = field(default_factory=dict)  # number -> net (None: no-connect)


@dataclass
class Schematic:
    parts: dict[str, Part]
    nets: dict[str, set[tuple[str, str]]]  # net -> {(ref, pin number)}
    problems: list[str]                     # found while building the netlist

    def net_of(self, ref: str, pin: str) -> str | None:
        return self.parts[ref].pins.get(pin)


def _key(x: float, y: float) -> tuple[int, int]:
    return round(x * 100), round(y * 100)  # 0.01 mm: KiCad stores 1e-4 mm, draws on 1.27


def _pin_xy(inst: list, px: float, py: float) -> tuple[float, float]:
    """A library pin position (Y up) -> sheet position (Y down) for this instance."""
    at = _item(inst, "at")
    x0, y0, rot = float(at[1]), float(at[2]), int(float(at[3])) if len(at) > 3 else 0
    mirror = _item(inst, "mirror")
    if mirror and mirror[1] == "x":
        py = -py
    if mirror and mirror[1] == "y":
        px = -px
    c, s = round(math.cos(math.radians(rot))), round(math.sin(math.radians(rot)))
    rx, ry = px * c - py * s, px * s + py * c
    return x0 + rx, y0 - ry


def _on_segment(p: tuple[int, int], a: tuple[int, int], b: tuple[int, int]) -> bool:
    (x, y), (x1, y1), (x2, y2) = p, a, b
    if (x2 - x1) * (y - y1) != (y2 - y1) * (x - x1):
        return False
    return min(x1, x2) <= x <= max(x1, x2) and min(y1, y2) <= y <= max(y1, y2)


def load_schematic(path: Path = SCHEMATIC) -> Schematic:
    """Netlist of a one-sheet schematic: pins joined by wires, labels and power symbols."""
    root = parse_sexpr(path.read_text())
    if root[0] != "kicad_sch":
        raise ValueError(f"{path} is not a KiCad schematic")
    libs = {}
    for sym in _items(_item(root, "lib_symbols") or [], "symbol"):
        pins = {}
        for unit in _items(sym, "symbol"):
            for pin in _items(unit, "pin"):
                at = _item(pin, "at")
                pins[_item(pin, "number")[1]] = (float(at[1]), float(at[2]))
        libs[sym[1]] = (pins, _item(sym, "power") is not None)

    parent: dict[tuple[int, int], tuple[int, int]] = {}

    def find(k):
        parent.setdefault(k, k)
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    def union(a, b):
        parent[find(a)] = find(b)

    parts: dict[str, Part] = {}
    pin_at: list[tuple[tuple[int, int], str, str]] = []
    names_at: list[tuple[tuple[int, int], str]] = []
    for inst in _items(root, "symbol"):
        lib_id = _item(inst, "lib_id")[1]
        props = _props(inst)
        pins, is_power = libs[lib_id]
        if is_power:  # a power symbol names the net at its pin
            for px, py in pins.values():
                names_at.append((_key(*_pin_xy(inst, px, py)), props["Value"]))
            continue
        ref = props["Reference"]
        parts[ref] = Part(ref, lib_id, props.get("Value", ""), props.get("Footprint", ""), props)
        for num, (px, py) in pins.items():
            pin_at.append((_key(*_pin_xy(inst, px, py)), ref, num))
    for kind in ("label", "global_label", "hierarchical_label"):
        for lab in _items(root, kind):
            at = _item(lab, "at")
            names_at.append((_key(float(at[1]), float(at[2])), lab[1]))
    wires = []
    for w in _items(root, "wire"):
        a, b = (_key(float(xy[1]), float(xy[2])) for xy in _items(_item(w, "pts"), "xy"))
        wires.append((a, b))
        union(a, b)
    no_connect = {_key(float(_item(n, "at")[1]), float(_item(n, "at")[2])) for n in _items(root, "no_connect")}
    # a pin, label or wire end touching the middle of a wire joins it
    for p in [k for k, *_ in pin_at] + [k for k, _ in names_at] + [e for w in wires for e in w]:
        for a, b in wires:
            if _on_segment(p, a, b):
                union(p, a)
    for k, *_ in pin_at:
        find(k)

    problems = []
    named: dict[tuple[int, int], str] = {}
    for k, name in names_at:
        root_k = find(k)
        if named.setdefault(root_k, name) != name:
            problems.append(f"one net has two names: {named[root_k]} and {name}")
    nets: dict[str, set[tuple[str, str]]] = {}
    for k, ref, num in pin_at:
        root_k = find(k)
        touching = sum(1 for k2, *_ in pin_at if find(k2) == root_k) > 1 or root_k in named
        if not touching:
            parts[ref].pins[num] = None
            if k not in no_connect:
                problems.append(f"{ref} pin {num} is unconnected and has no no-connect flag")
            continue
        if k in no_connect:
            problems.append(f"{ref} pin {num} has a no-connect flag but is wired")
        name = named.get(root_k, f"Net-({ref}-Pad{num})")
        parts[ref].pins[num] = name
        nets.setdefault(name, set()).add((ref, num))
    for name, members in nets.items():
        if len(members) < 2:
            problems.append(f"net {name} reaches only {sorted(members)}: a label typo?")
    return Schematic(parts, nets, problems)


# ---------------------------------------------------------------- data files

def load_pinmap(path: Path = PINMAP) -> dict:
    return tomllib.loads(path.read_text())


def load_power(path: Path = POWER) -> dict:
    return tomllib.loads(path.read_text())


def parse_value(text: str) -> float:
    """'4.7k' -> 4700.0, '330' -> 330.0, '100nF' -> 1e-7; the first number and its prefix."""
    m = re.match(r"\s*([0-9.]+)\s*([pnuµmkKM]?)", text)
    if m is None:
        raise ValueError(f"no value in {text!r}")
    scale = {"": 1, "p": 1e-12, "n": 1e-9, "u": 1e-6, "µ": 1e-6, "m": 1e-3, "k": 1e3, "K": 1e3, "M": 1e6}
    return float(m.group(1)) * scale[m.group(2)]


# ---------------------------------------------------------------- checks

def check_pinmap_rules(pinmap: dict) -> list[str]:
    """ESP32-S3 rules on the pin map alone."""
    out = []
    seen: dict[int, str] = {}
    consts = set()
    for name, sig in pinmap["signal"].items():
        gpio, d = sig["gpio"], sig["dir"]
        if gpio in seen:
            out.append(f"{name}: GPIO{gpio} already carries {seen[gpio]}")
        seen[gpio] = name
        if d not in ("out", "in", "io", "adc", "usb"):
            out.append(f"{name}: dir {d!r} is not out, in, io, adc or usb")
        if gpio in FLASH_GPIOS:
            out.append(f"{name}: GPIO{gpio} belongs to the module's SPI flash")
        elif gpio in OCTAL_GPIOS:
            out.append(f"{name}: GPIO{gpio} is reserved by the N16R8's octal flash/PSRAM (GPIO33-37)")
        elif gpio not in WROOM1_PIN:
            out.append(f"{name}: GPIO{gpio} is not brought out on the ESP32-S3-WROOM-1")
        if gpio in USB_GPIOS and d != "usb":
            out.append(f"{name}: GPIO{gpio} is the native USB {USB_GPIOS[gpio][4:]} (pod link and flashing), "
                       "reserved for USB")
        if d == "usb" and USB_GPIOS.get(gpio) != name:
            out.append(f"{name}: USB data lines are GPIO19 (USB_DN) and GPIO20 (USB_DP) only")
        if d == "adc" and gpio not in ADC1_GPIOS:
            out.append(f"{name}: GPIO{gpio} is not on ADC1 (GPIO1-10; ADC2 is unusable while Wi-Fi runs)")
        if gpio in STRAPPING:
            if sig.get("strap") != STRAPPING[gpio]:
                out.append(f"{name}: strapping pin GPIO{gpio} must be held {STRAPPING[gpio]} at boot; "
                           f"the pin map says strap = {sig.get('strap')!r}")
            if not str(sig.get("strap_why", "")).strip():
                out.append(f"{name}: strapping pin GPIO{gpio} needs strap_why: how the board holds it and why")
        elif "strap" in sig or "strap_why" in sig:
            out.append(f"{name}: GPIO{gpio} is not a strapping pin")
        if "const" in sig:
            if sig["const"] in consts:
                out.append(f"{name}: const {sig['const']} is used twice")
            consts.add(sig["const"])
    for gpio, name in USB_GPIOS.items():
        if seen.get(gpio) != name:
            out.append(f"{name}: the pod link rides the native USB: GPIO{gpio} must carry {name}")
    if "SAFE" not in pinmap["signal"]:
        out.append("SAFE: no safe-mode button in the pin map")
    elif pinmap["signal"]["SAFE"]["gpio"] in STRAPPING:
        out.append("SAFE: the safe-mode button must not sit on a strapping pin (held at reset it changes the boot)")
    return out


def check_schematic_pins(sch: Schematic, pinmap: dict) -> list[str]:
    """Every pin-map signal is a net of its name on the right module pin, and nothing else is."""
    out = list(sch.problems)
    ref = pinmap["module_ref"]
    module = sch.parts.get(ref)
    if module is None:
        return out + [f"no {ref} in the schematic"]
    if module.value != pinmap["module"]:
        out.append(f"{ref} is {module.value}, not the pin map's {pinmap['module']}")
    wanted = {str(WROOM1_PIN[s["gpio"]]): name for name, s in pinmap["signal"].items() if s["gpio"] in WROOM1_PIN}
    wanted.update({str(p): n for p, n in WROOM1_POWER.items()})
    for name, sig in pinmap["signal"].items():
        if name not in sch.nets:
            out.append(f"{name}: no net of that name in the schematic")
    for pin in sorted(module.pins, key=int):
        net = module.pins[pin]
        want = wanted.get(pin)
        if int(pin) in RESERVED_MODULE_PINS and net is not None:
            out.append(f"{ref} pin {pin} is the octal PSRAM's (GPIO35-37) but is wired to {net}")
        elif want is not None and net != want:
            out.append(f"{ref} pin {pin} should be {want}, is {net}")
        elif want is None and net is not None:
            out.append(f"{ref} pin {pin} carries {net}, which the pin map does not list")
    return out


def _pulls(sch: Schematic, net: str) -> set[str]:
    """The nets that resistors on `net` lead to."""
    found = set()
    for part in sch.parts.values():
        if part.ref.startswith("R") and len(part.pins) == 2 and net in part.pins.values():
            a, b = part.pins.values()
            found.add(b if a == net else a)
    return found


def check_strapping(sch: Schematic, pinmap: dict) -> list[str]:
    """A strapping pin is either left open (its internal pull sets the level) or pulled to its level."""
    out = []
    module = sch.parts[pinmap["module_ref"]]
    for gpio, level in STRAPPING.items():
        net = module.pins.get(str(WROOM1_PIN[gpio]))
        if net is None:
            continue
        pulls = _pulls(sch, net)
        if RAIL[level] not in pulls:
            out.append(f"GPIO{gpio} ({net}) needs a resistor to {RAIL[level]} to boot; it has {sorted(pulls)}")
        wrong = RAIL["low" if level == "high" else "high"]
        if wrong in pulls:
            out.append(f"GPIO{gpio} ({net}) is pulled to {wrong}, the wrong boot level")
    return out


def check_native_usb(sch: Schematic, pinmap: dict) -> list[str]:
    """USB-C D-/D+ reach the S3's GPIO19/20 (through the ESD array only): nothing bridges UART0 to USB."""
    out = []
    ref = pinmap["module_ref"]
    for gpio, net in USB_GPIOS.items():
        members = sch.nets.get(net, set())
        if (ref, str(WROOM1_PIN[gpio])) not in members:
            out.append(f"{net} does not reach {ref} GPIO{gpio}")
        if not any(r.startswith("J") for r, _ in members):
            out.append(f"{net} does not reach the USB connector")
        others = {r for r, _ in members if not (r == ref or r.startswith("J") or sch.parts[r].value.startswith("USBLC6"))}
        if others:
            out.append(f"{net} also goes to {sorted(others)}: the native USB pair runs connector -> ESD -> module only")
    if any(p.value.startswith(("CP210", "CH340", "CH910", "FT2")) for p in sch.parts.values()):
        out.append("a USB-UART bridge is on the board: the pod link is the S3's own USB CDC")
    return out


def check_vin_divider(sch: Schematic, pinmap: dict) -> list[str]:
    sig = pinmap["signal"]["VIN_SENSE"]
    top, bottom = sig["divider_ohm"]
    out = []
    for rail, ohm in (("+5V", top), ("GND", bottom)):
        rs = [p for p in sch.parts.values() if p.ref.startswith("R") and set(p.pins.values()) == {rail, "VIN_SENSE"}]
        if len(rs) != 1 or parse_value(rs[0].value) != ohm:
            out.append(f"VIN_SENSE needs one {ohm} ohm resistor to {rail}; found {[(r.ref, r.value) for r in rs]}")
    return out


def check_bom(sch: Schematic, path: Path = BOM) -> list[str]:
    out = []
    listed = {}
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        refs = row["reference"].split()
        if int(row["quantity"]) != len(refs):
            out.append(f"bom: {row['reference']} quantity {row['quantity']} != {len(refs)}")
        if not row["manufacturer_part"] or not row["manufacturer"]:
            out.append(f"bom: {row['reference']} has no manufacturer part")
        for r in refs:
            if r in listed:
                out.append(f"bom: {r} listed twice")
            listed[r] = row
    for ref, part in sch.parts.items():
        row = listed.pop(ref, None)
        if row is None:
            out.append(f"bom: {ref} is missing")
            continue
        for col, have in (("value", part.value), ("footprint", part.footprint),
                          ("manufacturer_part", part.props.get("MPN", ""))):
            if row[col] != have:
                out.append(f"bom: {ref} {col} is {row[col]!r}, the schematic says {have!r}")
    out.extend(f"bom: {ref} is not in the schematic" for ref in listed)
    return out


# ---------------------------------------------------------------- power budget

def trace_capacity_ma(width_mm: float, copper_oz: float, rise_c: float) -> int:
    """IPC-2221 external-layer current for a trace: I = 0.048 dT^0.44 A^0.725, A in mil^2."""
    area_mil2 = (width_mm / 0.0254) * (1.378 * copper_oz)
    return int(1000 * 0.048 * rise_c ** 0.44 * area_mil2 ** 0.725)


def budget(power: dict) -> dict:
    """Every figure of the power budget, and the LED current limit that fits all of them."""
    led, tr = power["led"], power["trace"]
    logic_ma = sum(v for k, v in power["logic"].items() if k.endswith("_ma") and k != "ldo_rated_ma")
    trunk_ma = trace_capacity_ma(tr["trunk_width_mm"], tr["copper_oz"], tr["rise_c"])
    branch_ma = trace_capacity_ma(tr["branch_width_mm"], tr["copper_oz"], tr["rise_c"])

    def usable(section):
        return int(section["rated_ma"] * section["derating"])

    per_output_ma = min(usable(power["connector"]["led"]), branch_ma)
    ceilings = {  # LED current each rating allows once the logic has had its share
        "psu": usable(power["psu"]) - logic_ma,
        "fuse": usable(power["fuse"]) - logic_ma,
        "input connector": usable(power["connector"]["input"]) - logic_ma,
        "trunk trace": trunk_ma - logic_ma,
        "led outputs": led["outputs"] * per_output_ma,
    }
    limit_ma = min(ceilings.values()) // 50 * 50  # a round number below every ceiling
    design_count = led["outputs"] * led["design_count_per_output"]
    return {
        "logic_ma": logic_ma,
        "trunk_trace_ma": trunk_ma,
        "branch_trace_ma": branch_ma,
        "ceilings_ma": ceilings,
        "binding": min(ceilings, key=ceilings.get),
        "led_limit_ma": limit_ma,
        "led_limit_per_output_ma": per_output_ma // 50 * 50,
        "design_count": design_count,
        "design_load_ma": design_count * led["ma_per_led"],
        "design_load_per_output_ma": led["design_count_per_output"] * led["ma_per_led"],
        "max_full_white_leds": limit_ma // led["ma_per_led"],
    }


def check_budget(power: dict) -> list[str]:
    b = budget(power)
    led, logic = power["led"], power["logic"]
    out = []
    if b["design_load_ma"] > b["led_limit_ma"]:
        out.append(f"{b['design_count']} LEDs x {led['ma_per_led']} mA = {b['design_load_ma']} mA "
                   f"exceeds the LED budget {b['led_limit_ma']} mA ({b['binding']})")
    if b["design_load_per_output_ma"] > b["led_limit_per_output_ma"]:
        out.append(f"one output draws {b['design_load_per_output_ma']} mA, over its "
                   f"{b['led_limit_per_output_ma']} mA connector/trace rating")
    if led["ma_per_led"] != 3 * led["ma_per_channel"]:
        out.append("ma_per_led is not three channels' worth")
    if b["logic_ma"] > logic["ldo_rated_ma"]:
        out.append(f"logic draws {b['logic_ma']} mA, over the LDO's {logic['ldo_rated_ma']} mA")
    if b["trunk_trace_ma"] < power["psu"]["rated_ma"]:
        out.append(f"the trunk trace carries {b['trunk_trace_ma']} mA, less than the PSU can give")
    if b["led_limit_ma"] + b["logic_ma"] > int(power["fuse"]["rated_ma"] * power["fuse"]["derating"]):
        out.append("LED limit plus logic would blow the fuse over time")
    if not led["derate_start_c"] < led["derate_full_c"] < led["max_c"] - 5:
        out.append("derating temperatures are out of order")
    return out


# ---------------------------------------------------------------- firmware/pod/board.py

def render_board(pinmap: dict | None = None, power: dict | None = None) -> str:
    pinmap = pinmap or load_pinmap()
    power = power or load_power()
    b, led = budget(power), power["led"]
    lines = [
        "# GENERATED by hardware/schematics/check.py from pinmap.toml and power.toml. DO NOT EDIT.",
        "# Regenerate with `python hardware/schematics/check.py --write`; a test fails when this file is stale.",
        f'"""Pod board {pinmap["board"]} rev {pinmap["revision"]} ({pinmap["module"]}): pins and power limits.',
        "",
        "Pins are GPIO numbers. Wiring and the budget behind the limits:",
        "hardware/schematics/README.md.",
        '"""',
        "from micropython import const",
        "",
        f'BOARD = "{pinmap["board"]} rev {pinmap["revision"]}"',
        "",
    ]
    for name, sig in pinmap["signal"].items():
        if "const" in sig:
            lines.append(f"{sig['const']} = const({sig['gpio']})  # {name}")
    leds = [s["const"] for n, s in pinmap["signal"].items() if n.startswith("LED_DATA_")]
    vin = pinmap["signal"]["VIN_SENSE"]["divider_ohm"]
    lines += [
        f"LED_PINS = ({', '.join(leds)}{',' if len(leds) == 1 else ''})",
        f"HEADSET_UART = const({pinmap['headset_uart']})",
        f"VIN_SENSE_RTOP_OHM = const({vin[0]})",
        f"VIN_SENSE_RBOT_OHM = const({vin[1]})",
        "",
        f"# {led['part']} LEDs. The limit is the default cap on the estimated current of all",
        f"# outputs together; the {b['binding']} rating binds (hardware/schematics/power.toml).",
        f"LED_OUTPUTS = const({led['outputs']})",
        f"LED_MA_PER_CHANNEL = const({led['ma_per_channel']})  # one channel at 255",
        f"LED_MA_PER_LED = const({led['ma_per_led']})  # full white",
        f"LED_IDLE_MA_PER_LED = const({led['idle_ma_per_led']})",
        f"LED_LIMIT_MA = const({b['led_limit_ma']})",
        f"LED_LIMIT_MA_PER_OUTPUT = const({b['led_limit_per_output_ma']})",
        "# Thermal derating: full limit up to START, falling linearly to FLOOR_PCT at FULL;",
        "# dark at OFF and above.",
        f"LED_DERATE_START_C = const({led['derate_start_c']})",
        f"LED_DERATE_FULL_C = const({led['derate_full_c']})",
        f"LED_DERATE_FLOOR_PCT = const({led['derate_floor_pct']})",
        f"LED_OFF_C = const({led['max_c'] - 5})",
        "",
    ]
    return "\n".join(lines)


def all_problems() -> list[str]:
    sch, pinmap, power = load_schematic(), load_pinmap(), load_power()
    out = (check_pinmap_rules(pinmap) + check_schematic_pins(sch, pinmap) + check_strapping(sch, pinmap)
           + check_native_usb(sch, pinmap) + check_vin_divider(sch, pinmap) + check_bom(sch) + check_budget(power))
    if not BOARD_PY.exists() or BOARD_PY.read_text() != render_board(pinmap, power):
        out.append(f"{BOARD_PY.relative_to(ROOT)} is stale: run check.py --write")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="regenerate firmware/pod/board.py")
    ap.add_argument("--budget", action="store_true", help="print the power budget")
    args = ap.parse_args(argv)
    if args.write:
        BOARD_PY.write_text(render_board())
        print(f"wrote {BOARD_PY.relative_to(ROOT)}")
    if args.budget:
        for k, v in budget(load_power()).items():
            print(f"{k}: {v}")
    problems = all_problems()
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
