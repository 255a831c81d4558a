# Runs first after every reset, as on any MicroPython board.
# The LEDs go dark before anything else runs: WS2812s keep their last colour
# through a reset, so a start-up that fails must not leave them lit. Then the
# watchdog is armed, before the app is imported: a start-up that hangs or dies
# resets the pod (dark again) instead of leaving it stuck. In safe mode
# nothing is armed: the REPL is for a person.
import hal

_MAX_LEDS = 300  # the most LEDs pod.json allows (pod/config.py)


def _dark():
    # the strip pod.json describes; without a readable one, the most LEDs it allows
    try:
        import json

        cfg = json.loads(hal.read_file("pod.json"))
        n = cfg.get("led_count", _MAX_LEDS)
        kind = cfg.get("led_type", "ws2812")
        hal.Leds(n, cfg.get("led_order", "GRBW" if kind == "sk6812_rgbw" else "GRB"), kind).write(bytearray(n * 3))
    except Exception:  # noqa: no or broken pod.json: the board's own LED type
        hal.Leds(_MAX_LEDS).write(bytearray(_MAX_LEDS * 3))


_dark()
if not hal.safe_mode():
    hal.Watchdog(10000)  # start-up budget; the app re-arms it with pod.json's watchdog_ms
