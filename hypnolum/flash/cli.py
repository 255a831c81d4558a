"""``tools/flash.py`` / ``hypnolum flash``: the technician's command.

Exit status: 0 every board passed; 1 at least one board failed (the others
were still done); 2 nothing was attempted (bad arguments or config, missing
image, no board).
"""
from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from hypnolum import paths
from hypnolum.protocol import pod_config

from . import boards, bundle, provision, updatekey
from .errors import BadConfig, FlashError
from .image import load_image, not_regular
from .job import Options, Outcome, run_board

_TRUTH = {"true": True, "false": False}


def _flag(key: pod_config.Key) -> str:
    return "--" + key.name.replace("_", "-")


def _truth(text: str) -> bool:
    try:
        return _TRUTH[text.lower()]
    except KeyError:
        raise argparse.ArgumentTypeError(f"{text!r} is not true or false") from None


def _key_help(key: pod_config.Key) -> str:
    unit = f" {key.unit}" if key.unit else ""
    return f"{key.doc}: {key.allowed()}{unit}; default {key.default_text()}"


def _provisioning_options(p: argparse.ArgumentParser) -> None:
    """One option per pod.json key of protocol/pod_config.py; the safety limits in a group of their own."""
    cfg = p.add_argument_group("provisioning (pod.json; docs/pod-config.md)")
    cfg.add_argument("--config", type=Path, help="TOML or JSON file of pod.json keys; the options below override it")
    limits = p.add_argument_group("safety limits (pod.json): set only here, at provisioning, never by a host command")
    for key in pod_config.KEYS:
        kind: Any = {pod_config.INT: int, pod_config.BOOL: _truth}.get(key.kind, str)
        extra = " (only with one board)" if key.name == "pod_id" else ""
        (limits if key.safety else cfg).add_argument(_flag(key), dest=key.name, type=kind, metavar=key.kind.upper(),
                                                     help=_key_help(key) + extra)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="flash.py",
        description="Flash MicroPython, upload the pod firmware and its config, and verify each board "
                    "by talking the pod protocol. See docs/flashing.md.",
    )
    where = p.add_argument_group("boards")
    where.add_argument("--port", action="append", default=[], help="board port (repeat for several); "
                       "default: the one board found by USB VID:PID")
    where.add_argument("--all", action="store_true", help="every board found by USB VID:PID, in parallel")
    what = p.add_argument_group("what goes on the board")
    what.add_argument("--image", type=Path, help="MicroPython ESP32-S3 image "
                      "(ESP32_GENERIC_S3-SPIRAM_OCT-...-v1.28.0.bin, written at 0x0)")
    what.add_argument("--no-image", action="store_true", help="keep the MicroPython already flashed")
    what.add_argument("--verify-only", action="store_true", help="only reset-free verify: HELLO against the build")
    what.add_argument("--ble-pair", action="store_true",
                      help="open the pod's BLE pairing window at its next boot, for ble_pair_s seconds "
                           "(docs/transports.md, BLE)")
    what.add_argument("--firmware", type=Path, default=paths.FIRMWARE, help="firmware tree (default: firmware/)")
    what.add_argument("--app-format", choices=bundle.FORMATS, default="xtensawin",
                      help="xtensawin .mpy for an ESP32-S3 (default); x86 .mpy (the 32-bit emulator) or py source")
    _provisioning_options(p)
    keys = p.add_argument_group("update key (docs/update.md)")
    keys.add_argument("--update-key", type=Path, metavar="FILE",
                      help="the fleet's update key (64 hex digits) for every pod; default: a key of each pod's own")
    keys.add_argument("--update-keys", type=Path, default=Path("update-keys"), metavar="DIR",
                      help="where each pod's own key is kept, as DIR/<pod id>.key (default: update-keys); "
                           "hostd needs it to update the pod")
    link = p.add_argument_group("connection")
    link.add_argument("--baud", type=int, default=921600, help="flashing baud rate (default 921600; "
                      "the S3's native USB ignores it)")
    link.add_argument("--before", default="default-reset", help="esptool reset before (default-reset | no-reset)")
    link.add_argument("--after", default="hard-reset", help="esptool reset after (hard-reset | soft-reset)")
    link.add_argument("--no-stub", action="store_true", help="talk to the ROM loader only (no flasher stub)")
    link.add_argument("--erase", action="store_true", help="erase the whole flash first (wipes the filesystem)")
    link.add_argument("--emulator", action="store_true",
                      help="settings for emulated boards: --before no-reset --after soft-reset --no-stub "
                           "--app-format x86")
    link.add_argument("--boot-timeout", type=float, default=20.0, help="seconds to wait for REPL / HELLO")
    link.add_argument("--jobs", type=int, default=0, help="boards at once (default: all)")
    p.add_argument("--log", type=Path, default=Path("flash-log.jsonl"), help="flash log (JSON lines)")
    return p


def _check_args(args: argparse.Namespace) -> None:
    """Settings and paths that would fail later, or block, refused before anything is read or touched."""
    for flag, value, low in (("--jobs", args.jobs, 0), ("--baud", args.baud, 1)):
        if value < low:
            raise BadConfig(f"{flag} {value}: must be at least {low}", step="config")
    if not args.boot_timeout > 0:
        raise BadConfig(f"--boot-timeout {args.boot_timeout}: must be more than 0 seconds", step="config")
    if args.config is not None:
        _regular(args.config, "--config", must_exist=True)
    _regular(args.log, "--log", must_exist=False)


def _regular(path: Path, flag: str, must_exist: bool) -> None:
    """BadConfig unless path is a regular file (or, if it need not exist, absent in a directory).
    Only stat: opening a FIFO would block, reading a device would not end."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if must_exist:
            raise BadConfig(f"{path}: {flag} file not found", step="config") from None
        parent = path.parent
        if parent.exists() and not parent.is_dir():
            raise BadConfig(f"{path}: {flag}: {parent} is not a directory", step="config") from None
        return
    except OSError as exc:
        raise BadConfig(f"{path}: {flag}: cannot read: {exc.strerror}", step="config") from None
    if kind := not_regular(path, st):
        raise BadConfig(f"{path}: {flag} needs a regular file, and this is {kind}", step="config")


def _settings(args: argparse.Namespace) -> dict:
    """pod.json's keys from --config, overridden by the options; all checked now, before any
    board is touched (the id may still come from the MAC), each problem named after its source."""
    flags = {k.name: getattr(args, k.name) for k in pod_config.KEYS if getattr(args, k.name) is not None}
    base = {k: v for k, v in provision.load_base(args.config).items() if k not in flags}
    if base:
        provision.make(base, where=str(args.config))
    provision.make(flags, where="arguments")
    return {**base, **flags}


def _boards(args: argparse.Namespace) -> list[boards.Board]:
    if args.port:
        return boards.given(args.port)
    found = boards.discover()
    if len(found) > 1 and not args.all:
        ports = ", ".join(b.port for b in found)
        raise FlashError(f"{len(found)} boards found ({ports}): give --port or --all", step="discover")
    return found


def _summary(console: Console, outcomes: list[Outcome]) -> None:
    table = Table(title="flash summary")
    for col in ("port", "MAC", "pod id", "result", "time", "detail"):
        table.add_column(col)
    for o in outcomes:
        result = "[green]ok[/]" if o.ok else f"[red]FAILED[/] ({o.step})"
        detail = f"build {o.hello.get('build_hash', 0):#010x}" if o.ok else o.error
        table.add_row(o.port, o.mac or "?", o.pod_id or "?", result, f"{o.seconds:.1f} s", detail)
    console.print(table)
    failed = sum(not o.ok for o in outcomes)
    console.print(f"{len(outcomes) - failed} ok, {failed} failed")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    console = Console()
    err = Console(stderr=True)
    if args.emulator:
        args.before, args.after, args.no_stub = "no-reset", "soft-reset", True
        if args.app_format == "xtensawin":
            args.app_format = "x86"
    try:
        _check_args(args)
        settings = _settings(args)
        image = None
        if not (args.no_image or args.verify_only):
            if args.image is None:
                raise FlashError("no image: give --image FILE (MicroPython ESP32_GENERIC_S3-SPIRAM_OCT), or --no-image",
                                 step="image")
            image = load_image(args.image)
        targets = _boards(args)
        if args.pod_id and len(targets) > 1:
            raise FlashError("--pod-id names one pod; with several boards leave it out (ids come from MACs)",
                             step="config")
        app = bundle.build(args.firmware, args.app_format)
        fleet_key = updatekey.read(args.update_key) if args.update_key is not None else None
    except FlashError as exc:
        err.print(f"[red]flash: {exc}[/]", highlight=False)
        return 2
    opts = Options(bundle=app, settings=settings, image=image, upload=not args.verify_only, baud=args.baud,
                   before=args.before, after=args.after, stub=not args.no_stub, erase=args.erase,
                   boot_timeout_s=args.boot_timeout, log_path=args.log, update_key=fleet_key,
                   update_keys_dir=args.update_keys, ble_pair=args.ble_pair)
    console.print(f"app: {len(app.files)} files, {app.size} bytes ({app.format}), build hash {app.build_hash:#010x}"
                  + (f"; image {image.path.name} {len(image.data)} bytes" if image else ""), highlight=False)
    progress = Progress(TextColumn("{task.fields[port]}"), TextColumn("{task.description:<8}"), BarColumn(),
                        DownloadColumn(), TimeElapsedColumn(), console=err, transient=False)

    def one(board: boards.Board) -> Outcome:
        task = progress.add_task("waiting", total=1, port=board.port)

        def tell(stage: str, done: int, total: int) -> None:
            progress.update(task, description=stage, completed=done, total=max(total, 1))

        def say(text: str) -> None:
            progress.console.print(f"{board.port}: {text}", highlight=False)

        outcome = run_board(board, opts, tell, say)
        progress.update(task, description="ok" if outcome.ok else f"FAILED:{outcome.step}")
        return outcome

    with progress, ThreadPoolExecutor(max_workers=args.jobs or len(targets)) as pool:
        outcomes = list(pool.map(one, targets))
    _summary(console, outcomes)
    for o in outcomes:
        if not o.ok:
            err.print(f"[red]{o.port}: {o.error}[/]", highlight=False)
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
