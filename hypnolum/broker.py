"""A private mosquitto on a free loopback port, for the demo and the tests.

    with PrivateBroker(workdir) as broker:
        broker.port  # connect aiomqtt to 127.0.0.1:broker.port
        broker.stop(); broker.start()  # a broker restart, same port

The broker runs as a child process (no daemonising) and is stopped on exit.
Running as root, mosquitto switches to user `mosquitto` before it opens its
files, so everything it reads or writes is made accessible to that user.
"""
from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from .procs import die_with_parent


class BrokerError(RuntimeError):
    pass


def find_mosquitto() -> str:
    path = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
    if not path:
        raise BrokerError("mosquitto is not installed: run `make setup`")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateBroker:
    def __init__(self, workdir: str | Path, port: int | None = None, extra_conf: str = "", conf: str | None = None):
        """``conf``: a complete configuration instead of the open loopback one
        (``{port}`` is replaced by the port); files it names should lie in ``workdir``."""
        self.dir = Path(workdir)
        self.conf = conf
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.extra_conf = extra_conf
        self.proc: subprocess.Popen | None = None
        self.log_path = self.dir / "mosquitto.log"

    def _conf(self) -> Path:
        conf = self.dir / "mosquitto.conf"
        head = (f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n" if self.conf is None
                else self.conf.replace("{port}", str(self.port)))
        conf.write_text(head + "log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n" + self.extra_conf)
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("mosquitto")
            except KeyError:
                return conf
            for path in (self.dir, *self.dir.iterdir()):  # password, ACL, keys: read after dropping root
                if path != self.log_path:
                    os.chown(path, user.pw_uid, user.pw_gid)
        return conf

    def start(self, timeout_s: float = 10.0) -> "PrivateBroker":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [find_mosquitto(), "-c", str(self._conf())],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGTERM),  # never outlive the demo or test
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerError(f"mosquitto exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise BrokerError(f"mosquitto did not listen on port {self.port} within {timeout_s} s: {self.log_tail()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def __enter__(self) -> "PrivateBroker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
