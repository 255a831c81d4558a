"""The ``hypnolum`` command: subcommands dispatch lazily to their modules.

Each entry maps a subcommand to ``"module:function"``; the function takes the
remaining arguments (a list of str) and returns an exit status. Importing a
subcommand's module only when it runs keeps ``hypnolum --help`` fast and lets
each part keep its own dependencies.
"""
from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    # name: ("module:function", one-line help)
    "hostd": ("hypnolum.host.daemon:main", "run the host daemon (pods <-> MQTT)"),
    "emulate": ("hypnolum.emulator.runner:main", "run emulated pods (firmware under MicroPython) on ptys"),
    "demo": ("hypnolum.demo:main", "emulated pods, hostd and a private broker: scene changes, live view"),
    "render": ("hypnolum.render_frames:main", "render recorded LED frames to a PNG / animated GIF"),
    "flash": ("hypnolum.flash.cli:main", "flash, provision and verify pod boards (tools/flash.py)"),
}


def _usage() -> str:
    lines = ["usage: hypnolum <command> [args...]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_target, help_) in sorted(COMMANDS.items())]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"hypnolum: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module, _, func = COMMANDS[name][0].partition(":")
    return getattr(importlib.import_module(module), func)(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
