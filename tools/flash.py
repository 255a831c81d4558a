#!/usr/bin/env python3
"""Flash, provision and verify pod boards. Same code as `hypnolum flash`; see docs/flashing.md.

It needs a Python with hypnolum and its dependencies installed: the checkout's
.venv after `make setup`. Started by another Python (`python3 tools/flash.py`
outside the venv), it hands over to the checkout's .venv/bin/python when there
is one; otherwise it exits 2 saying which command to run.
"""
import os
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
VENV = CHECKOUT / ".venv"
HANDED_OVER = "HYPNOLUM_FLASH_HANDED_OVER"  # set across the hand-over: never hand over twice


def _in_venv() -> bool:
    return Path(sys.prefix).resolve() == VENV.resolve()


def _hand_over_or_explain(problem: ImportError) -> int:
    python = VENV / "bin" / "python"
    if python.exists() and not _in_venv() and not os.environ.get(HANDED_OVER):
        os.environ[HANDED_OVER] = "1"
        os.execv(str(python), [str(python), str(Path(__file__).resolve()), *sys.argv[1:]])
    where = "the checkout's venv" if _in_venv() else f"this Python ({sys.executable})"
    print(f"tools/flash.py: hypnolum cannot be imported in {where}: {problem}\n"
          f"Run `make setup` in {CHECKOUT} once, then:\n"
          f"  {VENV}/bin/python tools/flash.py ARGS   (or: make flash FLASH_ARGS=\"ARGS\")\n"
          "With hypnolum installed from its wheel: hypnolum flash ARGS (docs/install.md)",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    try:
        from hypnolum.flash.cli import main
    except ImportError as exc:
        sys.exit(_hand_over_or_explain(exc))
    sys.exit(main())
