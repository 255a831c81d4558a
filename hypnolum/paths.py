"""Where the repository's non-Python parts live (firmware, emulator shims)."""
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"
EMULATOR_SHIMS = ROOT / "emulator" / "mpy"
PROTOCOL = ROOT / "protocol"
