"""The flash tool refuses an image that is not a regular file or does not fit the flash, at once.

tools/flash.py runs as a subprocess, as a technician runs it. Each case must
end with status 2 and a message naming the path and what is wrong with it,
before any board is looked for, and without blocking: a FIFO opened for
reading would wait for a writer forever, /dev/zero would be read until
memory runs out (the subprocess is held to a memory limit, so a tool that
reads it fails instead of taking the machine with it).
"""
from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from hypnolum import paths
from hypnolum.emulator import esp_rom
from hypnolum.flash.image import FLASH_BYTES, load_image

TOOL = [sys.executable, str(paths.ROOT / "tools" / "flash.py")]
RETURNS_S = 30  # far longer than the tool needs to refuse; a tool that blocks is stopped here
MEMORY = 1 << 30


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))


def flash(*args: str, cwd: Path) -> tuple[int, str]:
    try:
        proc = subprocess.run([*TOOL, *args], capture_output=True, text=True, timeout=RETURNS_S, cwd=cwd,
                              env=dict(os.environ, COLUMNS="250"), preexec_fn=_limit_memory)
    except subprocess.TimeoutExpired:
        pytest.fail(f"flash.py {' '.join(args)} did not return within {RETURNS_S} s")
    return proc.returncode, proc.stdout + proc.stderr


def oversized(tmp_path: Path) -> Path:
    """A sparse file one byte over the flash, starting with a good ESP32-S3 image header."""
    path = tmp_path / "too-big.bin"
    with open(path, "wb") as f:
        f.write(esp_rom.make_image(4096, seed=3))
        f.truncate(FLASH_BYTES + 1)
    return path


def cases(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """name -> (what --image gets, what the message must say)"""
    fifo = tmp_path / "image.fifo"
    os.mkfifo(fifo)
    directory = tmp_path / "images"
    directory.mkdir()
    link = tmp_path / "latest.bin"
    link.symlink_to(fifo)
    dir_link = tmp_path / "current"
    dir_link.symlink_to(directory)
    return {
        "fifo": (fifo, f"{fifo}: a FIFO (named pipe), not an image file"),
        "dev-zero": (Path("/dev/zero"), "/dev/zero: a character device, not an image file"),
        "directory": (directory, f"{directory}: a directory, not an image file"),
        "link-to-fifo": (link, f"{link}: a FIFO (named pipe) (through the link to {fifo}), not an image file"),
        "link-to-directory": (dir_link, f"{dir_link}: a directory (through the link to {directory})"),
        "oversized": (oversized(tmp_path), (f"too-big.bin: {FLASH_BYTES + 1} bytes is larger than the 16 MB "
                                            f"({FLASH_BYTES} bytes) of flash of the ESP32-S3-WROOM-1-N16R8")),
        "missing": (tmp_path / "nope.bin", "nope.bin: image not found"),
    }


CASES = ("fifo", "dev-zero", "directory", "link-to-fifo", "link-to-directory", "oversized", "missing")


@pytest.mark.parametrize("case", CASES)
def test_an_image_that_is_not_a_file_that_fits_is_refused_at_once(tmp_path, case):
    image, message = cases(tmp_path)[case]
    rc, out = flash("--image", str(image), "--port", str(tmp_path / "ttyUSB0"), cwd=tmp_path)
    assert rc == 2, out
    assert message in out, out
    assert "Traceback" not in out, out
    assert "ttyUSB0" not in out, out  # refused before any board is looked for


def test_an_image_that_fits_is_read_whole(tmp_path):
    path = tmp_path / "ok.bin"
    data = esp_rom.make_image(150_000, seed=1)
    path.write_bytes(data)
    image = load_image(path)
    assert image.data == data and image.path == path
    link = tmp_path / "link.bin"
    link.symlink_to(path)
    assert load_image(link).data == data  # a link to a regular file is fine


@pytest.mark.parametrize("flag", ["--config", "--log"])
def test_config_and_log_paths_that_are_not_files_are_refused_at_once(tmp_path, flag):
    fifo = tmp_path / "settings.fifo"
    os.mkfifo(fifo)
    rc, out = flash(flag, str(fifo), "--no-image", "--port", str(tmp_path / "ttyUSB0"), cwd=tmp_path)
    assert rc == 2, out
    assert f"{fifo}: {flag} needs a regular file, and this is a FIFO (named pipe)" in out, out
    rc, out = flash(flag, "/dev/zero", "--no-image", "--port", str(tmp_path / "ttyUSB0"), cwd=tmp_path)
    assert rc == 2 and f"/dev/zero: {flag} needs a regular file, and this is a character device" in out, out


@pytest.mark.parametrize("args, message", [
    (["--jobs", "-1"], "--jobs -1: must be at least 0"),
    (["--baud", "0"], "--baud 0: must be at least 1"),
    (["--boot-timeout", "0"], "--boot-timeout 0.0: must be more than 0 seconds"),
])
def test_bad_numbers_are_config_errors(tmp_path, args, message):
    rc, out = flash(*args, "--no-image", "--port", str(tmp_path / "ttyUSB0"), cwd=tmp_path)
    assert rc == 2 and message in out and "Traceback" not in out, out
