# main.py ended by Ctrl-C on the REPL's CDC (emulator/mpy/launch.py calls sit()). The board
# prints the traceback (shared/runtime/pyexec.c:186-188) and enters its REPL
# (ports/esp32/main.c:161-179). Its C code has no frame in that traceback, so none of
# launch.py's is printed. Imported only then: the running pod's heap does not hold it.
import io
import sys
import time

REPL_LINE = "[emulator] repl"  # emulator/pod.py REPL_LINE: the board now sits in its REPL


def sit(exc, launcher):
    out = io.StringIO()
    sys.print_exception(exc, out)
    mine = 'File "%s"' % launcher
    for line in out.getvalue().split("\n"):
        if line and mine not in line:
            print(line)
    print(REPL_LINE)
    while True:  # the emulator's own interpreter serves the REPL; this one keeps the app's state
        time.sleep(1)
