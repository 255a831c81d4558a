"""The app bundle and its build hash: the host's definition equals what the firmware computes on the pod."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hypnolum import paths
from hypnolum.emulator.pod import find_micropython
from hypnolum.flash import bundle, upload
from hypnolum.flash.errors import FlashError


def _install(b: bundle.Bundle, fs: Path) -> None:
    for f in b.files:
        (fs / f.path).parent.mkdir(parents=True, exist_ok=True)
        (fs / f.path).write_bytes(f.data)
    (fs / upload.STATE_FILE).write_bytes(upload.FIRST_STATE)


def _pod_hash(fs: Path) -> int:
    """build.build_hash() as the real interpreter computes it over a board filesystem."""
    env = dict(os.environ, MICROPYPATH=f"{paths.EMULATOR_SHIMS}:{paths.FIRMWARE}:.frozen", HYPNOLUM_POD_DIR=str(fs))
    out = subprocess.run([find_micropython(), "-c", "from pod import build; print(build.build_hash())"],
                         env=env, cwd=fs, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.strip())


@pytest.fixture(scope="module")
def x86():
    return bundle.build(paths.FIRMWARE, "x86")


@pytest.mark.parametrize("fmt", bundle.FORMATS)
def test_layout_per_format(fmt):
    b = bundle.build(paths.FIRMWARE, fmt)
    names = b.paths
    assert {"boot.py", "main.py", "a/pod/app" + (".py" if fmt == "py" else ".mpy")} <= names
    assert ("a/hal.py" if fmt == "py" else "a/hal.mpy") in names
    assert {f.path for f in b.root} == {"boot.py", "main.py"}  # never in a slot: never updated
    assert [f.path for f in b.slot] == sorted(f.path for f in b.slot)  # the manifest's order
    if fmt != "py":
        mpy = next(f for f in b.slot if f.path == "pod/link.mpy")
        assert mpy.data[:1] == b"M"  # the .mpy magic
    assert b.build_hash == bundle.build_hash(list(b.slot))


def test_pod_computes_the_same_build_hash(x86, tmp_path):
    _install(x86, tmp_path)
    (tmp_path / "pod.json").write_text("{}")  # config is not part of the build
    assert _pod_hash(tmp_path) == x86.build_hash != 0


def test_a_changed_or_extra_file_changes_the_pod_hash(x86, tmp_path):
    _install(x86, tmp_path)
    target = tmp_path / "a" / "pod" / "render.mpy"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    assert _pod_hash(tmp_path) != x86.build_hash
    _install(x86, tmp_path)
    (tmp_path / "a" / "pod" / "old_module.mpy").write_bytes(b"M")  # left over from an older build
    assert _pod_hash(tmp_path) != x86.build_hash


def test_the_hash_is_the_active_slots(x86, tmp_path):
    _install(x86, tmp_path)
    (tmp_path / "boot.py").write_text("# edited\n")  # outside the slot: never updated, not the build
    assert _pod_hash(tmp_path) == x86.build_hash
    (tmp_path / "a").rename(tmp_path / "b")
    (tmp_path / upload.STATE_FILE).write_text('{"active": "b"}')
    assert _pod_hash(tmp_path) == x86.build_hash


def test_no_slots_means_unknown(tmp_path):
    assert _pod_hash(tmp_path) == 0


def test_stray_root_module_is_refused(tmp_path):
    fw = tmp_path / "fw"
    shutil.copytree(paths.FIRMWARE, fw)
    (fw / "extra.py").write_text("x = 1\n")
    with pytest.raises(FlashError, match="extra.py: root modules are"):
        bundle.build(fw, "py")


def test_compile_error_names_the_file(tmp_path):
    fw = tmp_path / "fw"
    shutil.copytree(paths.FIRMWARE, fw)
    (fw / "pod" / "broken.py").write_text("def f(:\n")
    with pytest.raises(FlashError, match=r"broken.py: mpy-cross -march=xtensawin failed"):
        bundle.build(fw, "xtensawin")


def test_tools_flash_and_hypnolum_flash_are_one_command():
    for cmd in ([sys.executable, str(paths.ROOT / "tools" / "flash.py"), "--help"],
                [sys.executable, "-m", "hypnolum", "flash", "--help"]):
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        assert out.returncode == 0 and "--app-format" in out.stdout, out.stderr
