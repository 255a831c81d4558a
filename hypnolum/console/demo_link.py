"""Where a running ``hypnolum demo`` tells ``hypnolum console --demo`` its broker.

The demo writes a small JSON file once its broker is up and removes it when it
ends::

    {"pid": 4242, "host": "127.0.0.1", "port": 40123, "host_id": "demo-host",
     "pods": ["pod-01", ...], "workdir": "/tmp/hypnolum-demo-..."}

at ``$HYPNOLUM_DEMO_FILE`` if set, else ``$XDG_RUNTIME_DIR/hypnolum-demo.json``,
else ``~/.cache/hypnolum/demo.json`` (written 0600, replaced atomically). A file
whose demo process is gone (killed before it could remove it) is stale and
treated as absent.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path


class NoDemo(RuntimeError):
    """No demo is running (or its file cannot be read): the message says which."""


@dataclass(frozen=True)
class DemoBroker:
    pid: int
    host: str
    port: int
    host_id: str

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


def demo_file() -> Path:
    if env := os.environ.get("HYPNOLUM_DEMO_FILE"):
        return Path(env)
    if runtime := os.environ.get("XDG_RUNTIME_DIR"):
        return Path(runtime) / "hypnolum-demo.json"
    return Path.home() / ".cache" / "hypnolum" / "demo.json"


def write(host: str, port: int, host_id: str, pods: list[str], workdir: str, path: Path | None = None) -> Path:
    path = demo_file() if path is None else path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({"pid": os.getpid(), "host": host, "port": port, "host_id": host_id, "pods": pods,
                   "workdir": workdir}, f)
    os.replace(tmp, path)
    return path


def remove(path: Path | None = None) -> None:
    """Remove the file if this process wrote it (a newer demo's file stays)."""
    path = demo_file() if path is None else path
    try:
        if json.loads(path.read_text(encoding="utf-8")).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError, AttributeError):
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read(path: Path | None = None) -> DemoBroker:
    """The running demo's broker; NoDemo saying why there is none."""
    path = demo_file() if path is None else path
    hint = "start one with `make demo DEMO_ARGS=--forever` (or `hypnolum demo --forever`) in another terminal"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NoDemo(f"no demo is running ({path} does not exist): {hint}") from None
    except (OSError, ValueError) as exc:
        raise NoDemo(f"{path}: cannot be read ({exc})") from None
    pid, port, host = (data.get(k) for k in ("pid", "port", "host")) if isinstance(data, dict) else (None,) * 3
    if not isinstance(pid, int) or not isinstance(port, int) or not isinstance(host, str):
        raise NoDemo(f"{path}: pid, host and port are required")
    if not _alive(pid):
        raise NoDemo(f"the demo that wrote {path} (pid {pid}) has ended: {hint}")
    host_id = data.get("host_id")
    return DemoBroker(pid, host, port, host_id if isinstance(host_id, str) else "")


class DemoTarget:
    """The running demo's broker, for the console's feed (see mqtt_feed.Target)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.current: DemoBroker | None = None

    def resolve(self):
        from ..host.config import MqttConfig

        self.current = read(self.path)
        return MqttConfig(host=self.current.host, port=self.current.port)

    def changed(self) -> bool:
        try:
            return read(self.path) != self.current
        except NoDemo:
            return self.current is not None
