"""hypnolum installed like a product: the wheel built from this checkout, in a fresh venv outside it.

The wheel is built (``pip wheel``, as docs/install.md does) from a copy of the checkout's
sources, installed into a new venv in a temporary directory, and every command runs from a
working directory outside the checkout, with the new venv's ``bin`` first on PATH: ``hypnolum
--help`` and ``--version``, ``hostd --check-config`` on a good and a bad file, ``emulate`` (one
pod: the firmware and the emulator shims compiled from the installed package), ``hostd``
bringing that pod online on a real mosquitto and carrying out a scene, and ``console`` serving
its page and static files from the installed package.

The dependencies are not installed from PyPI here: installing the wheel with its dependencies
into a fresh venv took 31 s with pip's cache warm (about 280 MB; minutes with a cold cache),
more than this test's budget of the suite. So the venv is made ``--without-pip``, the wheel goes
in with ``pip --python VENV install --no-deps``, and the dependencies are reached through a
``.pth`` file naming the development venv's site-packages, after the new venv's own. A ``.pth``
line only adds a directory to ``sys.path``: the ``.pth`` files inside it, among them the
checkout's editable-install hook, are not run, so the checkout is not importable from the new
venv. The test asserts it: ``hypnolum`` and its firmware come from the new venv, it is the only
``sys.path`` entry holding a ``hypnolum``, and no editable-install hook was loaded.

A second test runs ``tools/flash.py`` under a Python without hypnolum, as docs/flashing.md says
one may.
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import urllib.request
import zipfile
from pathlib import Path

import pytest

from hypnolum import __version__
from hypnolum.broker import free_port

from helpers.mqtt_watch import Watcher
from helpers.wait import wait_until

CHECKOUT = Path(__file__).resolve().parent.parent
DEV_BIN = Path(sys.executable).parent
# the folders the wheel maps under hypnolum/ (setup.py), and where each lands in it
SHIPPED = {"hypnolum": "hypnolum", "protocol": "hypnolum/protocol", "host": "hypnolum/host",
           "emulator": "hypnolum/emulator", "firmware": "hypnolum/firmware"}
NOT_SOURCES = shutil.ignore_patterns("__pycache__", "*.pyc", "*.mpy", "*.so")  # build products
P = "hypnolum/v1/pods"


def _run(cmd: list[str], env: dict, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _build_wheel(tmp: Path) -> Path:
    """``pip wheel`` over a copy of the checkout's sources (a build in the checkout would leave
    build/ there, shared with every other run)."""
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(CHECKOUT / name, src / name)
    for folder in SHIPPED:
        shutil.copytree(CHECKOUT / folder, src / folder, ignore=NOT_SOURCES)
    out = _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp / "dist"), str(src)],
               dict(os.environ), tmp, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    (wheel,) = (tmp / "dist").glob("hypnolum-*.whl")
    return wheel


def _expected_files(src: Path) -> set[str]:
    """Every file of the shipped folders, as its path in the wheel."""
    names = set()
    for folder, target in SHIPPED.items():
        for f in (src / folder).rglob("*"):
            if f.is_file() and "__pycache__" not in f.parts:
                names.add(f"{target}/{f.relative_to(src / folder).as_posix()}")
    return names


def _make_venv(tmp: Path, wheel: Path) -> Path:
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    py = venv / "bin" / "python"
    out = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps",
                          "--no-index", str(wheel)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "zz-hypnolum-deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    # the emulator's 32-bit MicroPython and mpy-cross go beside the venv's python (docs/install.md)
    for tool in ("micropython", "micropython.frozen", "mpy-cross"):
        if not (DEV_BIN / tool).exists():
            pytest.fail(f"{DEV_BIN / tool} is missing: `make setup` builds it")
        (venv / "bin" / tool).symlink_to(DEV_BIN / tool)
    return venv


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv, env, cwd): the wheel installed in a fresh venv, and how to run its commands outside the checkout."""
    tmp = tmp_path_factory.mktemp("wheel")
    assert not tmp.resolve().is_relative_to(CHECKOUT)
    wheel = _build_wheel(tmp)
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    missing = sorted(_expected_files(tmp / "src") - in_wheel)
    assert not missing, f"not in the wheel: {missing}"
    venv = _make_venv(tmp, wheel)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin"
    env["HYPNOLUM_IMAGE_CACHE"] = str(tmp / "image-cache")  # the firmware is compiled from the installed tree
    cwd = tmp / "work"
    cwd.mkdir()
    return venv, env, cwd


def _where_it_imports_from(venv: Path, env: dict, cwd: Path) -> dict:
    code = ("import json, os, sys, hypnolum; from hypnolum import paths; "
            "print(json.dumps({'module': hypnolum.__file__, 'root': str(paths.ROOT), "
            "'holders': [p for p in sys.path if os.path.exists(os.path.join(p or '.', 'hypnolum'))], "
            "'finders': [m for m in sys.modules if 'editable' in m], "
            "'firmware': sorted(p.name for p in paths.FIRMWARE.iterdir()), "
            "'shims': sorted(p.name for p in paths.EMULATOR_SHIMS.glob('*.py')), "
            "'deploy': sorted(p.name for p in paths.DEPLOY.iterdir())}))")
    out = _run([str(venv / "bin" / "python"), "-c", code], env, cwd)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _config(cwd: Path, port: int, pods: Path) -> Path:
    cfg = cwd / "hostd.toml"
    cfg.write_text(f'[host]\nid = "wheel-host"\n[mqtt]\nport = {port}\nkeepalive = 5\n'
                   f'[serial]\nports = ["{pods}/*.tty"]\nscan_interval_s = 0.1\n'
                   "[pods]\nconnect_interval_s = 0.1\n")
    return cfg


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


def _stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


@pytest.mark.broker
@pytest.mark.micropython
async def test_the_installed_wheel_runs_hostd_emulate_and_console_outside_the_checkout(installed, mosquitto):
    venv, env, cwd = installed
    hypnolum = str(venv / "bin" / "hypnolum")

    where = _where_it_imports_from(venv, env, cwd)
    site = Path(where["module"]).parent.parent
    assert site.is_relative_to(venv) and where["root"] == str(site / "hypnolum"), where
    # the only place on sys.path with a hypnolum in it is the new venv, and the checkout's editable hook never ran
    assert where["holders"] == [str(site)] and where["finders"] == [], where
    assert {"boot.py", "main.py", "hal.py", "pod"} <= set(where["firmware"]), where["firmware"]
    assert {"hal.py", "launch.py", "machine.py"} <= set(where["shims"]), where["shims"]
    assert "hypnolum-hostd.service" in where["deploy"], where["deploy"]

    out = _run([hypnolum, "--help"], env, cwd)
    assert out.returncode == 0 and {"hostd", "emulate", "console"} <= set(out.stdout.split()), out.stdout
    out = _run([hypnolum, "--version"], env, cwd)
    assert out.returncode == 0 and out.stdout.strip() == f"hypnolum {__version__}", out.stdout + out.stderr

    pods = cwd / "emu"
    cfg = _config(cwd, mosquitto.port, pods)
    out = _run([hypnolum, "hostd", "--check-config", str(cfg)], env, cwd)
    assert out.returncode == 0, out.stderr
    bad = cwd / "bad.toml"
    bad.write_text("[eeg]\nmax_pad_s = -1\n")
    out = _run([hypnolum, "hostd", "--check-config", str(bad)], env, cwd)
    assert out.returncode == 2 and "eeg.max_pad_s" in out.stderr, out.stderr

    emu = subprocess.Popen([hypnolum, "emulate", "--pods", "1", "--dir", str(pods)], env=env, cwd=cwd,
                           stdout=subprocess.PIPE, stderr=open(cwd / "emulate.log", "wb"), text=True)
    hostd = console = None
    try:
        line = await asyncio.wait_for(asyncio.to_thread(emu.stdout.readline), 60)  # "pod-01 <tty>" once booted
        assert line.split() == ["pod-01", str(pods / "pod-01.tty")], line + (cwd / "emulate.log").read_text()
        compiled = {p.name for p in Path(env["HYPNOLUM_IMAGE_CACHE"]).rglob("*.mpy")}
        assert {"app.mpy", "hal.mpy"} <= compiled, compiled  # built from the installed firmware and shims
        async with Watcher(mosquitto.port) as watch:
            hostd = subprocess.Popen([hypnolum, "hostd", "--config", str(cfg)], env=env, cwd=cwd,
                                     stdout=subprocess.DEVNULL, stderr=open(cwd / "hostd.log", "wb"))
            await wait_until(lambda: watch.text(f"{P}/pod-01/availability") == "online", timeout=30,
                             what="the emulated pod online through the installed hostd")
            await watch.publish(f"{P}/pod-01/set", {"id": "w1", "scene": {"effect": "solid", "color": [255, 0, 0]}})
            result = await wait_until(lambda: watch.json(f"{P}/pod-01/set/result"), timeout=15, what="set/result")
            assert result["id"] == "w1" and result["ok"] is True, result
        out = _run([hypnolum, "console", "--help"], env, cwd)
        assert out.returncode == 0 and "--config" in out.stdout, out.stdout + out.stderr
        console = subprocess.Popen([hypnolum, "console", "--config", str(cfg), "--listen", f"127.0.0.1:{free_port()}"],
                                   env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=open(cwd / "console.log", "wb"),
                                   text=True)
        line = await asyncio.wait_for(asyncio.to_thread(console.stdout.readline), 30)  # "hypnolum console on URL"
        assert line.startswith("hypnolum console on http://127.0.0.1:"), line + (cwd / "console.log").read_text()
        url = line.split()[-1]
        static = Path(where["root"]) / "console" / "static"
        for page, served in (("", "index.html"), ("static/vendor/uplot/uPlot.iife.min.js", None)):
            body = await asyncio.to_thread(_get, url + page)
            assert body == (static / (served or page.removeprefix("static/"))).read_bytes(), page
    finally:
        statuses = {name: _stop(proc) for name, proc in (("console", console), ("hostd", hostd), ("emulate", emu))
                    if proc is not None}
    logs = "".join((cwd / f"{name}.log").read_text() for name in statuses)
    assert set(statuses.values()) == {0} and "Traceback" not in logs, (statuses, logs[-3000:])


def test_flash_tool_under_a_python_without_hypnolum(tmp_path):
    """docs/flashing.md: `python3 tools/flash.py` outside the venv hands over to the checkout's venv;
    a copy with no venv beside it says which command to run, and exits 2."""
    bare = [sys.executable, "-S"]  # no site-packages: neither hypnolum nor its dependencies
    out = subprocess.run([*bare, str(CHECKOUT / "tools" / "flash.py"), "--help"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "--image" in out.stdout, out.stdout + out.stderr
    (tmp_path / "tools").mkdir()
    lone = shutil.copy2(CHECKOUT / "tools" / "flash.py", tmp_path / "tools" / "flash.py")
    out = subprocess.run([*bare, str(lone), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stdout == "", out.stdout + out.stderr
    assert "No module named 'hypnolum'" in out.stderr and "make setup" in out.stderr, out.stderr
    assert f"{tmp_path}/.venv/bin/python tools/flash.py" in out.stderr, out.stderr
