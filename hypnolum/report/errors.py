"""The report's one error: an input that cannot be reported on (the message names the file and what is wrong)."""
from __future__ import annotations


class ReportError(Exception):
    """A recording or frames file the report cannot use; ``hypnolum report`` prints it and exits 1."""
