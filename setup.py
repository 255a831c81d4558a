"""The hypnolum distribution's layout: which source folders become which packages.

One distribution, one top-level name: the repository's folders are mapped under
``hypnolum`` so nothing generic lands in site-packages, and the installed
package keeps the checkout's layout of the parts CPython never imports
(hypnolum/paths.py finds them in either):

=============  ======================  =====================================
folder         installed as            what
=============  ======================  =====================================
``hypnolum/``  ``hypnolum``            the command, demo, flash tool, console
``protocol/``  ``hypnolum.protocol``   the pod link's messages and codec
``host/``      ``hypnolum.host``       hostd (and ``host/deploy/`` as data)
``emulator/``  ``hypnolum.emulator``   emulated pods, with ``mpy/`` and
                                       ``mpy_repl/``, the MicroPython shims
``firmware/``  ``hypnolum.firmware``   the pod's MicroPython app, as files
=============  ======================  =====================================

Every folder under these with a name Python could import, and files in it, is
a package, with or without ``__init__.py`` (a folder of data files, such as
``host/deploy/`` or the console's ``static/``, too: setuptools wants the folders
it ships listed), so a new subpackage needs no entry here. Metadata,
dependencies and which non-Python files ship are in pyproject.toml.
"""
from __future__ import annotations

from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent
FOLDERS = {
    "hypnolum": "hypnolum",
    "hypnolum.protocol": "protocol",
    "hypnolum.host": "host",
    "hypnolum.emulator": "emulator",
    "hypnolum.firmware": "firmware",
}


def _package_dirs(name: str, folder: str) -> dict[str, str]:
    """``{package: folder}`` for ``folder`` and each folder below it that holds files."""
    top = HERE / folder
    found = {}
    for d in sorted([top, *(p for p in top.rglob("*") if p.is_dir())]):
        rel = d.relative_to(top)
        if "__pycache__" in rel.parts or not all(part.isidentifier() for part in rel.parts):
            continue
        if not any(f.is_file() for f in d.iterdir()):
            continue
        found[".".join((name, *rel.parts))] = Path(folder, rel).as_posix()
    return found


PACKAGE_DIR = {pkg: d for name, folder in FOLDERS.items() for pkg, d in _package_dirs(name, folder).items()}

setup(package_dir=PACKAGE_DIR, packages=sorted(PACKAGE_DIR))
