"""The ``hypnolum`` command: subcommands dispatch lazily to their modules.

Each entry maps a subcommand to ``"module:function"``; the function takes the
remaining arguments (a list of str) and returns an exit status. Importing a
subcommand's module only when it runs keeps ``hypnolum --help`` fast and lets
each part keep its own dependencies.
"""
from __future__ import annotations

import importlib
import sys

DISTRIBUTION = "hypnolum"

COMMANDS: dict[str, tuple[str, str]] = {
    # name: ("module:function", one-line help)
    "hostd": ("hypnolum.host.daemon:main", "run the host daemon (pods <-> MQTT)"),
    "emulate": ("hypnolum.emulator.runner:main", "run emulated pods (firmware under MicroPython) on ptys"),
    "demo": ("hypnolum.demo:main", "emulated pods, hostd and a private broker: scene changes, live view"),
    "render": ("hypnolum.render_frames:main", "render recorded LED frames to a PNG / animated GIF"),
    "flash": ("hypnolum.flash.cli:main", "flash, provision and verify pod boards (tools/flash.py)"),
    "set": ("hypnolum.ctl:set_main", "send a pod a scene, night limits or stop over MQTT; wait for the result"),
    "update": ("hypnolum.update_tool:main", "update pods' firmware through hostd (MQTT): over the link, or through the REPL of an older pod; wait for each result"),
    "get": ("hypnolum.ctl:get_main", "print a pod's state as hostd publishes it on MQTT"),
    "monitor": ("hypnolum.monitor:main", "live terminal view of every pod on an MQTT broker"),
    "console": ("hypnolum.console.app:main", "the session console: a web page to watch and steer a session"),
    "report": ("hypnolum.report.cli:main", "debrief report (HTML, PDF) of a recording"),
}


def version() -> str:
    """The installed distribution's version (its metadata, not the source tree)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown (not installed)"


def _usage() -> str:
    lines = ["usage: hypnolum <command> [args...]", "       hypnolum --version", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_target, help_) in sorted(COMMANDS.items())]
    lines += ["", "hypnolum <command> --help describes a command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        print(f"hypnolum {version()}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"hypnolum: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module, _, func = COMMANDS[name][0].partition(":")
    try:
        entry = getattr(importlib.import_module(module), func)
    except ModuleNotFoundError as exc:  # a part (or a library it needs) is not installed
        print(f"hypnolum: the {name} command cannot start: {exc}", file=sys.stderr)
        return 1
    return entry(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
