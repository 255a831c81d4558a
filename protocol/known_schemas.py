"""Write or check protocol/known_schemas.json: the message table of every released schema.

A pod built before HELLO carried its message table names only its schema
fingerprint; the host finds that schema's table here (protocol/compat.py).
The file also records the layout hash of each CORE message, which may never
change. Entries already in the file are kept as they are: a released schema
stays known, and a core message keeps the hash recorded for it (a test fails
when a definition no longer matches it). This schema's entry is added.

    python -m hypnolum.protocol.known_schemas            # rewrite the file
    python -m hypnolum.protocol.known_schemas --check    # exit 1 if it is stale
"""
from __future__ import annotations

import json
import sys
from typing import Any

from . import compat, messages, schema

TARGET = compat.KNOWN_PATH
ABOUT = ("fingerprint -> {type id: [message, layout hash]} of every released schema, and the layout "
         "hash of each core message; written by `make codec`, entries are kept (docs/protocol.md)")


def table(msgs: tuple[schema.Message, ...] = schema.MESSAGES) -> dict[str, list[str]]:
    return {f"{m.type_id:#04x}": [m.name, f"{m.layout_hash:#06x}"] for m in msgs}


def build(existing: dict[str, Any]) -> dict[str, Any]:
    schemas = dict(existing.get("schemas", {}))
    schemas[f"{schema.FINGERPRINT:#010x}"] = table()  # one fingerprint, one table
    core = dict(existing.get("core", {}))
    for m in schema.MESSAGES:
        if m.name in messages.CORE:
            core.setdefault(m.name, f"{m.layout_hash:#06x}")
    return {"about": ABOUT, "core": dict(sorted(core.items())), "schemas": schemas}


def _text(data: dict[str, Any]) -> str:
    """JSON with one line per message."""
    j = json.dumps
    lines = ["{", f' "about": {j(data["about"])},', f' "core": {j(data["core"])},', ' "schemas": {']
    for i, (fp, tab) in enumerate(data["schemas"].items()):
        rows = [f"   {j(t)}: {j(entry)}" for t, entry in tab.items()]
        lines += [f"  {j(fp)}: {{", ",\n".join(rows), "  }" + ("," if i < len(data["schemas"]) - 1 else "")]
    return "\n".join(lines + [" }", "}"]) + "\n"


def render() -> str:
    existing = json.loads(TARGET.read_text()) if TARGET.exists() else {}
    return _text(build(existing))


def main(argv: list[str] | None = None) -> int:
    return schema.write_or_check(TARGET, render(), argv, "protocol/known_schemas.json")


if __name__ == "__main__":
    sys.exit(main())
