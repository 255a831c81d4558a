import sys

from hypnolum.cli import main

sys.exit(main())
