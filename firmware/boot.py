# Runs first after every reset, as on any MicroPython board.
# Hold BOOT while resetting for safe mode: main.py then starts nothing, the
# REPL stays on the USB-UART (the firmware would take it over for the pod link).
import hal

hal.safe_mode()  # sample the button now, while it is still held
