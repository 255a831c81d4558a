"""Where hypnolum's non-Python parts live: the pod firmware, the emulator's MicroPython shims,
the protocol definitions and the deployment files.

They sit in one tree, ``ROOT``, laid out the same way however hypnolum is installed:

* a checkout (``make setup``'s editable install): ``ROOT`` is the repository, with
  ``firmware/``, ``emulator/mpy/``, ``protocol/`` and ``host/deploy/`` in it;
* an installed wheel (a venv under /opt, pipx): ``ROOT`` is the ``hypnolum`` package
  directory, where setup.py puts the same folders (``hypnolum/firmware/``,
  ``hypnolum/emulator/mpy/``, ...).

The installed layout is recognised by the firmware inside the package; a checkout has none
there. Tools that only a checkout has (``tools/``, ``tests/``) are not in ``ROOT`` when installed.
"""
from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def _root(package: Path = PACKAGE) -> Path:
    """The tree that holds firmware/, emulator/, protocol/ and host/: the package when installed, else the checkout."""
    return package if (package / "firmware" / "main.py").is_file() else package.parent


ROOT = _root()
FIRMWARE = ROOT / "firmware"  # the pod's MicroPython app: boot.py, main.py, hal.py, pod/
EMULATOR_SHIMS = ROOT / "emulator" / "mpy"  # the HAL shim and launcher the emulated pods run first
EMULATOR_REPL_SHIMS = ROOT / "emulator" / "mpy_repl"  # machine.py of an emulated board's REPL
PROTOCOL = ROOT / "protocol"
DEPLOY = ROOT / "host" / "deploy"  # the systemd unit, udev rules, example hostd.toml, broker config
