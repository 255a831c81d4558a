# machine for the emulated board's REPL (MicroPython unix port): the unix
# port's stub plus what provisioning uses on an ESP32. reset() ends the
# interpreter with a status that the board emulator reads as a hard reset
# (then boot.py and main.py run); any other exit is a soft reboot.
import binascii
import os
import sys

from umachine import *  # noqa: F401,F403

_HARD_RESET_STATUS = 42  # emulator/board.py HARD_RESET_STATUS


def reset():
    sys.exit(_HARD_RESET_STATUS)


def unique_id():
    return binascii.unhexlify(os.getenv("HYPNOLUM_UID") or "020000000001")
