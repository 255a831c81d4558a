"""``python -m hypnolum.host --config FILE``: the same as ``hypnolum hostd``."""
import sys

from .daemon import main

sys.exit(main(sys.argv[1:]))
