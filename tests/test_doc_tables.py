"""The configuration tables in the docs say what the code does: names, types, ranges, defaults.

* docs/hostd.md, "Configuration": every key of each section it lists (all but ``[mqtt]``,
  which docs/mqtt.md covers) against host/config.py's pydantic models.

pod.json's key table (docs/pod-config.md) is generated from its schema; tests/test_pod_config.py
fails when it is stale.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import annotated_types as at
from pydantic.fields import FieldInfo

from hypnolum.host.config import Config

DOCS = Path(__file__).resolve().parent.parent / "docs"
BOUND = {">": at.Gt, "≥": at.Ge, "<": at.Lt, "≤": at.Le}
BASE = {"float": float, "int": int, "bool": bool, "string": str, "path": Path, "list": tuple, "table": dict}


def _section(doc: str, heading: str) -> str:
    text = (DOCS / doc).read_text()
    start = text.index(f"\n## {heading}")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def _rows(text: str) -> list[list[str]]:
    """The cells of every table row whose first cell starts with a backticked name."""
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) >= 3:
            rows.append(cells)
    return rows


def _bounds(field: FieldInfo) -> set[tuple[type, float]]:
    return {(type(m), float(getattr(m, type(m).__name__.lower()))) for m in field.metadata if type(m) in BOUND.values()}


def _pattern(field: FieldInfo) -> str | None:
    return next((m.pattern for m in field.metadata if hasattr(m, "pattern")), None)


def _doc_bounds(kind: str) -> set[tuple[type, float]]:
    """``float > 0, ≤ 60`` -> {(Gt, 0), (Le, 60)}; ``int 0..20`` -> {(Ge, 0), (Le, 20)}."""
    found = set()
    for low, high in re.findall(r"(-?[\d.]+)\.\.(-?[\d.]+)", kind):
        found |= {(at.Ge, float(low)), (at.Le, float(high))}
    for op, value in re.findall(r"([>≥<≤]) (-?[\d.]+)", kind):
        found.add((BOUND[op], float(value)))
    return found


def _doc_value(text: str, default):
    """A default cell in the doc's notation as the value the model holds."""
    text = text.strip().strip("`")
    if default is None:  # an optional key: "none" when it is not set
        return None if text == "none" else text
    if isinstance(default, bool):
        return {"true": True, "false": False}[text]
    if isinstance(default, (int, float)):
        return type(default)(float(text))
    if isinstance(default, tuple):
        return tuple(ast.literal_eval(text))
    if isinstance(default, Path):
        return Path(text)
    if isinstance(default, dict):
        return ast.literal_eval(text)
    return text


def _check_row(key: str, kind: str, default_text: str, field: FieldInfo) -> list[str]:
    problems = []
    annotation = getattr(field.annotation, "__origin__", field.annotation)
    optional = [a for a in getattr(field.annotation, "__args__", ()) if a is not type(None)]
    if len(optional) == 1 and type(None) in field.annotation.__args__:  # X | None: documented as X
        annotation = optional[0]
    words = re.sub(r"`[^`]*`", "", kind).split()
    base = BASE.get(words[0].rstrip(":")) if words else None
    if base is not None and base is not annotation:
        problems.append(f"{key}: documented as {kind!r}, the model has {field.annotation}")
    if _doc_bounds(kind) != _bounds(field):
        problems.append(f"{key}: documented range {kind!r}, the model's is {sorted(_bounds(field), key=str)}")
    doc_pattern = re.search(r"`(\[[^`]+)`", kind)
    model_pattern = _pattern(field)
    if (doc_pattern and f"^{doc_pattern.group(1)}$") != (model_pattern and model_pattern):
        problems.append(f"{key}: documented pattern {doc_pattern and doc_pattern.group(1)!r}, the model's {model_pattern!r}")
    if field.default_factory is None:
        try:
            documented = _doc_value(default_text, field.default)
        except (ValueError, KeyError, SyntaxError) as exc:
            return problems + [f"{key}: default {default_text!r} does not read as {field.default!r}: {exc}"]
        if documented != field.default:
            problems.append(f"{key}: documented default {default_text!r}, the model's is {field.default!r}")
    return problems


def test_hostd_configuration_table_matches_the_models():
    rows = _rows(_section("hostd.md", "Configuration"))
    documented: dict[str, set[str]] = {}
    problems = []
    for cells in rows:
        keys = re.findall(r"`(\w+)\.(\w+|\*)`", cells[0])
        defaults = [d.strip() for d in cells[2].split(", ")] if len(keys) > 1 else [cells[2]]
        assert len(defaults) == len(keys), cells
        for (section, name), default in zip(keys, defaults):
            if name == "*":
                continue
            documented.setdefault(section, set()).add(name)
            model = Config.model_fields[section].annotation
            if name not in model.model_fields:
                problems.append(f"{section}.{name}: documented, but host/config.py has no such key")
                continue
            problems += _check_row(f"{section}.{name}", cells[1], default, model.model_fields[name])
    assert {"eeg", "recorder", "lsl"} <= set(documented), sorted(documented)
    for section, names in documented.items():
        missing = set(Config.model_fields[section].annotation.model_fields) - names
        problems += [f"{section}.{name}: in host/config.py, not in docs/hostd.md" for name in sorted(missing)]
    assert not problems, "\n".join(problems)
