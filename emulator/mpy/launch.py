# Emulator entry point: run boot.py then main.py, as a board does after reset.
# MICROPYPATH puts this directory (the HAL shim) before firmware/.
import boot  # noqa: F401
import main  # noqa: F401
import hal

if hal.safe_mode():
    # main.py started nothing: a board now sits in its REPL; this process waits likewise
    import time

    while True:
        time.sleep(1)
