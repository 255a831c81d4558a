"""The pod the light-safety checks drive: six LEDs on a 200 mA budget (six white LEDs
would draw 366 mA), so the current limit, the brightness cap and fade-to-safe all act.
Shared by the light-safety property test and the firmware handler fuzz."""

N_LEDS = 6
CONFIG = {
    "led_count": N_LEDS,
    "psu_ma": 300,
    "board_reserve_ma": 100,  # budget 200 mA: six white LEDs would draw 366
    "led_ma": 20,
    "led_idle_ma": 1,
    "brightness_max": 230,
    "fade_after_ms": 2000,
}
BUDGET_MA = CONFIG["psu_ma"] - CONFIG["board_reserve_ma"]
