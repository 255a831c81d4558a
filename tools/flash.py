#!/usr/bin/env python3
"""Flash, provision and verify pod boards. Same code as `hypnolum flash`; see docs/flashing.md."""
import sys
from pathlib import Path

try:
    from hypnolum.flash.cli import main
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from hypnolum.flash.cli import main

if __name__ == "__main__":
    sys.exit(main())
