# machine for the emulated board's REPL (MicroPython unix port): the unix
# port's stub plus what provisioning uses on an ESP32. reset() ends the
# interpreter with a status that the board emulator reads as a hard reset
# (then boot.py and main.py run); any other exit is a soft reboot. It first
# sends RST! to the board's HYPNOLUM_BOARD_SYS datagram socket.
import binascii
import os
import sys

from umachine import *  # noqa: F401,F403

_HARD_RESET_STATUS = 42  # emulator/board.py HARD_RESET_STATUS


def reset():
    # tell the board first: host bytes that arrive while the interpreter winds
    # down (a Ctrl-C among them) must not turn the reset into something else
    path = os.getenv("HYPNOLUM_BOARD_SYS")
    if path:
        import socket
        import struct

        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            s.connect(struct.pack("H", socket.AF_UNIX) + path.encode() + b"\0")
            s.send(b"RST!")
        except OSError:
            pass
        s.close()
    sys.exit(_HARD_RESET_STATUS)


def unique_id():
    return binascii.unhexlify(os.getenv("HYPNOLUM_UID") or "020000000001")
