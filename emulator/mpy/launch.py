# Emulator entry point: run boot.py then main.py, as a board does after reset.
import os
import sys

if os.getenv("HYPNOLUM_HEAP_MAP"):
    import heapmap  # noqa: F401  (a heap census: emulator/mpy/heapmap.py)

# The unix port puts this script's directory first on sys.path (ports/unix/main.c:686-688 at
# v1.28.0), where the stand-ins' sources lie: imported from there they would be compiled into
# the pod's heap. Without it sys.path is MICROPYPATH: the compiled HAL shim first (boot.py puts
# a flashed pod's slot before the filesystem's root, after the shim), the firmware or the pod's
# filesystem, and .frozen, the stand-ins for the board's C modules (emulator/manifest.py).
sys.path.pop(0)
import boot  # noqa: F401, E402

# "[emulator] ..." lines are the emulator's (emulator/pod.py MAIN_LINE), not the board's output.
# On an S3 the REPL's USB CDC comes up only now, after boot.py (ports/esp32/main.c:152-155,
# mp_usbd_init): from here a Ctrl-C on it can reach main.py. The board emulator sends it as
# SIGINT, which the unix port raises as KeyboardInterrupt while a file runs
# (shared/runtime/pyexec.c:127-129, ports/unix/unix_mphal.c:49-85).
print("[emulator] main.py")
try:
    import main  # noqa: F401, E402
except KeyboardInterrupt as e:
    import interrupted  # noqa: E402  (the traceback, then the board's REPL: emulator/mpy/interrupted.py)

    interrupted.sit(e, __file__)
import hal  # noqa: E402

if hal.safe_mode():
    # main.py started nothing: a board now sits in its REPL; this process waits likewise
    import time

    while True:
        time.sleep(1)
