# Runs first after every reset, as on any MicroPython board. Never updated over
# the link: it must boot whatever the slots hold (docs/update.md).
# 1. The slot. slots.json names the active app slot (a/ or b/). A build on
#    trial that boots a second time unconfirmed (it was reset, or its time ran
#    out) is rolled back here, before any of its code runs. The slot goes on
#    sys.path just before the filesystem root, so its hal and pod/ are the
#    ones imported. No slots.json: the app runs from the root or MICROPYPATH.
# 2. The LEDs go dark: WS2812s keep their last colour through a reset, so a
#    start-up that fails must not leave them lit.
# 3. The boot is counted: boots in a row that never ran RUNNING_MS
#    (pod/update.py) make the next one safe mode for updates (link and update
#    store only), and twice that many the REPL's safe mode.
# 4. The watchdog is armed before the app is imported: a start-up that hangs
#    or dies resets the pod (dark again) instead of leaving it stuck. In safe
#    mode nothing is armed: the REPL is for a person.
# An exception here would keep main.py from running (ports/esp32/main.c:152-162):
# everything that may fail is caught.
import json
import os
import sys

_STATE = "slots.json"
_LOOP = 3  # boots in a row without reaching running: the next is safe mode for updates
_MAX_LEDS = 300  # the most LEDs pod.json allows (pod/config.py)


def _read_state():
    try:
        with open(_STATE) as f:
            st = json.loads(f.read())
        if st.get("active") in ("a", "b"):
            return st
    except Exception:  # noqa: absent (no slots) or unreadable: run what MICROPYPATH / the root holds
        pass
    return None


def _choose(st):
    back = st.get("trial") and st.get("tried")
    if back:  # reset before the host confirmed it: the previous slot, whole and verified, again
        st["active"] = "b" if st["active"] == "a" else "a"
        st["trial"] = 0
    st["tried"] = 1 if st.get("trial") else 0
    st["back"] = 1 if back else 0
    cwd = os.getcwd()
    at = 0
    for i, p in enumerate(sys.path):
        if p in ("", ".", "/", cwd):
            at = i
            break
    sys.path.insert(at, ("" if cwd == "/" else cwd) + "/" + st["active"])


_st = _read_state()
if _st is not None:
    try:
        _choose(_st)
    except Exception as e:  # noqa: the root, as without slots
        print("hypnolum: slot choice failed:", repr(e))
        _st = None

import hal  # noqa: E402  (the slot's, on a board)


def _dark():
    # the strip pod.json describes; without a readable one, the most LEDs it allows
    try:
        cfg = json.loads(hal.read_file("pod.json"))
        n = cfg.get("led_count", _MAX_LEDS)
        kind = cfg.get("led_type", "ws2812")
        hal.dark(n, cfg.get("led_order", "GRBW" if kind == "sk6812_rgbw" else "GRB"), kind)
    except Exception:  # noqa: no or broken pod.json: the board's own LED type
        hal.dark(_MAX_LEDS)


def _count(st):
    fails = st.get("fails", 0)
    st["safe"] = 0
    if fails >= 2 * _LOOP:
        hal.request_safe_mode()  # the REPL; the next boot tries the app again
        st["fails"] = 0
        return
    if hal.safe_mode():
        return  # SAFE held, or the SAFE_MODE command: a person's boot, not counted
    st["safe"] = 1 if fails >= _LOOP else 0
    st["fails"] = fails + 1


_dark()
if _st is not None:
    try:
        _count(_st)
        hal.write_file(_STATE, json.dumps(_st))
    except Exception as e:  # noqa: a full or failing filesystem: boot anyway
        print("hypnolum: slots.json not written:", repr(e))
if not hal.safe_mode():
    hal.Watchdog(10000)  # start-up budget; the app re-arms it with pod.json's watchdog_ms
# boot.py's names stay in the interpreter's globals for as long as the pod runs:
# what only the boot needed goes, so its code is not kept in the heap
del _read_state, _choose, _dark, _count, _st
