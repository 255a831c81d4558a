"""Flash, provision and verify pod boards (``tools/flash.py``, ``hypnolum flash``).

One board goes through four steps (:mod:`.job`), each a module of its own:

1. :mod:`.image`: the MicroPython image into the SPI flash with esptool (as a
   library), compressed, MD5-verified;
2. :mod:`.upload`: the app (``firmware/``, compiled by :mod:`.bundle`) and the
   provisioning config (:mod:`.provision`) into the board's filesystem over
   the raw REPL with mpremote's transport, each file written atomically;
3. a reset, then :mod:`.verify`: HELLO over the pod protocol must carry the
   host's schema fingerprint, the build hash of what was uploaded, and the
   provisioned pod id and LED count;
4. :mod:`.flashlog`: one JSON line per board and attempt.

:mod:`.boards` finds boards by USB VID:PID; :mod:`.cli` runs one board or all
of them in parallel with a progress bar each. docs/flashing.md is the guide.
"""
