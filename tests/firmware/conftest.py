# The files here are MicroPython tests: tests/test_firmware.py runs them under
# the real interpreter. CPython's pytest must not import them itself.
collect_ignore_glob = ["test_*.py"]
