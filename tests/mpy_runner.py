# Runs the test_* functions of one module under MicroPython and reports each
# on its own line, for tests/test_firmware.py to turn into pytest results:
#   @@ PASS name | @@ FAIL name (traceback follows) | @@ DONE
# Usage: micropython mpy_runner.py <module>
import sys

import asyncio


def _run(fn):
    r = fn()
    if hasattr(r, "send"):  # an async test: a coroutine (generator) to drive
        asyncio.run(r)


def main(name):
    mod = __import__(name)
    names = sorted(n for n in dir(mod) if n.startswith("test_"))
    for n in names:
        try:
            _run(getattr(mod, n))
        except Exception as e:
            print("@@ FAIL", n)
            sys.print_exception(e)
        else:
            print("@@ PASS", n)
    print("@@ DONE")


main(sys.argv[1])
