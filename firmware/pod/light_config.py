"""pod.json keys of the light path: LED hardware, safety limits, fade to safe.

Merged into config._SCHEMA; same form (default, type, low, high). Limits a
technician sets at provisioning, never a host command: the governor reads them.
"""
from pod import board

SCHEMA = {
    "led_type": ("ws2812", str, 5, 11),  # ws2812 | sk6812 | sk6812_rgbw | apa102 | sk9822
    "led_ma": (board.LED_MA_PER_CHANNEL, int, 1, 200),  # mA one colour channel draws at full duty
    "led_idle_ma": (board.LED_IDLE_MA_PER_LED, int, 0, 20),  # mA one LED draws when dark (its controller)
    # current the LED supply may give the strips; default: the pod board's LED limit
    # (hardware/schematics/power.toml: PSU derated, less the logic's share, within fuse,
    # connector and trace ratings)
    "psu_ma": (board.LED_LIMIT_MA, int, 100, 100000),
    "board_reserve_ma": (0, int, 0, 10000),  # kept back for other loads on the same supply
    "brightness_max": (255, int, 0, 255),  # cap on every channel (sRGB byte)
    "night_brightness_max": (64, int, 0, 255),
    "night_green_max": (96, int, 0, 255),
    "night_blue_max": (12, int, 0, 255),
    "fade_after_ms": (2000, int, 200, 600000),  # link silence before the fade to safe
    "strobe_enabled": (False, bool, 0, 1),  # Dreamachine-style 8-13 Hz flicker allowed at all
}
LED_TYPES = ("ws2812", "sk6812", "sk6812_rgbw", "apa102", "sk9822")
