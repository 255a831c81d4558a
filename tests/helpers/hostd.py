"""hostd as a subprocess with a test config, for end-to-end tests."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


class Hostd:
    """One hostd process watching ``pods_dir/*.tty`` (or ``ports``: paths and globs), fast timeouts for tests."""

    def __init__(self, tmp_path: Path, port: int, pods_dir: Path | None = None, host_id: str = "test-host",
                 extra: str = "", mqtt_extra: str = "", env: dict | None = None, ports: list[str] | None = None):
        self.dir = Path(tmp_path)
        self.pods_dir = Path(pods_dir) if pods_dir else self.dir / "pods"
        self.pods_dir.mkdir(parents=True, exist_ok=True)
        self.config = self.dir / f"{host_id}.toml"
        globs = ", ".join(f'"{p}"' for p in (ports or [f"{self.pods_dir}/*.tty"]))
        self.config.write_text(
            f'[host]\nid = "{host_id}"\n'
            f"[mqtt]\nport = {port}\nkeepalive = 5\nbackoff_max_s = 1.0\n{mqtt_extra}\n"
            f"[serial]\nports = [{globs}]\nscan_interval_s = 0.1\n"
            "[pods]\nheartbeat_timeout_s = 1.0\nping_interval_s = 0.2\nconnect_interval_s = 0.1\n"
            "command_timeout_s = 0.3\ncommand_retries = 2\n" + extra
        )
        self.env = env
        self.log = self.dir / f"{host_id}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hypnolum", "hostd", "--config", str(self.config)],
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=None if self.env is None else {**os.environ, **self.env},
            )

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    stop = kill

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""
