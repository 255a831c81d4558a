"""Shell lines and JSON examples as docs/mqtt.md shows them, for tests that run them as written."""
from __future__ import annotations

import json
import re
from pathlib import Path

MQTT_DOC = Path(__file__).resolve().parents[2] / "docs" / "mqtt.md"


def section(title: str, doc: Path = MQTT_DOC) -> str:
    """The text of the ``## title`` section (up to the next ``## ``)."""
    text = doc.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else len(text)]


def blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


def shell_line(block: str, *needles: str) -> str:
    """The one line of a shell block that holds every needle."""
    found = [line for line in block.splitlines() if all(n in line for n in needles)]
    assert len(found) == 1, (needles, found)
    return found[0]


def json_example(title: str, starts_with: str) -> dict:
    """The JSON example in section ``title`` whose text starts with ``starts_with``."""
    for block in blocks(section(title), "json"):
        if block.lstrip().startswith(starts_with):
            return json.loads(block)
    raise AssertionError(f"no JSON example starting {starts_with!r} in section {title!r}")
