"""Firmware other than the checkout's, for emulated pods: a released commit's, or this
firmware generated from changed message definitions.

    tree = released_tree(commit, tmp)           # firmware/ and protocol/ as at that commit
    tree = variant_tree(tmp, {old: new})        # this firmware, wire.py from edited messages.py
    pod = EmulatedPod(..., micropypath=micropypath(tree / "firmware"))
    layouts_of(tree / "protocol")               # (fingerprint, {type id: (name, layout hash)})

Definitions from elsewhere are read by this checkout's schema code (protocol/schema.py),
imported as a package of their own in a subprocess, so nothing here changes the
running host's definitions.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import io
import tarfile
import tempfile
from pathlib import Path

from hypnolum import paths
from hypnolum.emulator import image

REPO = paths.ROOT
# the last commit whose firmware sends HELLO without a message table (schema 0x5b8be72e)
BEFORE_TABLE = "d7916d09c0b761c5da0c8a072c8f3aa4e661e5f9"
_PROTOCOL_CODE = ("__init__.py", "schema.py", "gen_firmware.py", "compat.py", "known_schemas.py")
# names an older messages.py lacks, with the values they had before they existed
_BEFORE = "\nTAIL_RUNS = globals().get('TAIL_RUNS', {})\n" \
          "CORE = globals().get('CORE', frozenset({'hello', 'connect', 'ack', 'nack'}))\n" \
          "RECORDS = globals().get('RECORDS', ())\n"


def released_tree(commit: str, dest: Path) -> Path:
    """firmware/ and protocol/ exactly as they are at ``commit`` (git archive), under dest."""
    out = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", commit, "firmware", "protocol"],
                         capture_output=True, check=True).stdout
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(out)) as tar:
        tar.extractall(dest, filter="data")
    return dest


def _package(messages_py: str, dest: Path) -> Path:
    """A package ``altproto`` under dest: this checkout's schema code with these definitions."""
    pkg = dest / "altproto"
    pkg.mkdir(parents=True, exist_ok=True)
    for name in _PROTOCOL_CODE:
        shutil.copy(paths.ROOT / "protocol" / name, pkg / name)
    (pkg / "messages.py").write_text(messages_py + _BEFORE)
    return dest


def _run(root: Path, code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(root)!r})\n" + code],
                          capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"definitions under {root}: {proc.stderr.strip()}")
    return proc.stdout


def layouts_of(protocol_dir: Path) -> tuple[int, dict[int, tuple[str, int]]]:
    """(fingerprint, {type id: (name, layout hash)}) of the definitions in protocol_dir/messages.py."""
    with tempfile.TemporaryDirectory(prefix="layouts-") as tmp:
        root = _package((protocol_dir / "messages.py").read_text(), Path(tmp))
        out = json.loads(_run(root, "import json; from altproto import schema as s\n"
                                    "print(json.dumps([s.FINGERPRINT, [[m.type_id, m.name, m.layout_hash] "
                                    "for m in s.MESSAGES]]))"))
    return out[0], {t: (name, h) for t, name, h in out[1]}


def variant_tree(dest: Path, edits: dict[str, str]) -> Path:
    """This checkout's firmware/ and protocol/ under dest, with each ``old`` text of
    protocol/messages.py replaced by ``new`` and firmware/pod/wire.py generated from that."""
    text = (paths.ROOT / "protocol" / "messages.py").read_text()
    for old, new in edits.items():
        if text.count(old) != 1:
            raise ValueError(f"protocol/messages.py holds {text.count(old)} copies of {old!r}")
        text = text.replace(old, new)
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copytree(paths.FIRMWARE, dest / "firmware", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(paths.ROOT / "protocol", dest / "protocol", ignore=shutil.ignore_patterns("__pycache__"))
    (dest / "protocol" / "messages.py").write_text(text)
    root = _package(text, dest / "gen")
    (dest / "firmware" / "pod" / "wire.py").write_text(_run(root, "from altproto import gen_firmware as g\n"
                                                                  "sys.stdout.write(g.render())"))
    return dest


def micropypath(firmware: Path) -> list[str]:
    """MICROPYPATH of an emulated pod running this firmware tree, compiled as the flash tool does."""
    return image.build([paths.EMULATOR_SHIMS, firmware]) + [".frozen"]
