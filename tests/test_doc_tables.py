"""The configuration tables in the docs say what the code does: names, types, ranges, defaults.

* docs/hostd.md, "Configuration": every key of each section it lists (all but ``[mqtt]``,
  which docs/mqtt.md covers) against host/config.py's pydantic models.
* docs/flashing.md, "Provisioning config": the numbers of each ``pod.json`` row against the
  flash tool's model (hypnolum/flash/provision.py), and the power limits (``psu_ma``,
  ``board_reserve_ma``) against the firmware's own schema (firmware/pod/light_config.py and
  the board's ``LED_LIMIT_MA`` in firmware/pod/board.py), read from the source.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import annotated_types as at
from pydantic.fields import FieldInfo

from hypnolum import paths
from hypnolum.flash.provision import Provision
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


def _firmware_schema() -> dict[str, tuple]:
    """firmware/pod/light_config.py's SCHEMA, with ``board.X`` read from firmware/pod/board.py."""
    board = dict(re.findall(r"^(\w+) = const\((\d+)\)", (paths.FIRMWARE / "pod" / "board.py").read_text(), re.M))
    tree = ast.parse((paths.FIRMWARE / "pod" / "light_config.py").read_text())
    node = next(n.value for n in ast.walk(tree) if isinstance(n, ast.Assign) and n.targets[0].id == "SCHEMA")
    schema = {}
    for key, value in zip(node.keys, node.values):
        default = value.elts[0]
        resolved = int(board[default.attr]) if isinstance(default, ast.Attribute) else ast.literal_eval(default)
        schema[ast.literal_eval(key)] = (resolved, *(ast.literal_eval(e) if not isinstance(e, ast.Name) else e.id
                                                     for e in value.elts[1:]))
    return schema


def test_flashing_pod_json_table_matches_the_flash_tool_and_the_firmware():
    firmware = _firmware_schema()
    problems = []
    rows = {cells[0].strip("`"): cells for cells in _rows(_section("flashing.md", "Provisioning config"))}
    assert {"psu_ma", "board_reserve_ma", "led_count"} <= set(rows), sorted(rows)
    for key, (_name, default, allowed) in ((k, c[:3]) for k, c in rows.items()):
        field = Provision.model_fields[key]
        if key == "pod_id":  # derived from the MAC: no default value
            continue
        if isinstance(field.default, bool) or (isinstance(field.default, str)):
            shown = str(field.default).lower() if isinstance(field.default, bool) else field.default
            if default.strip("`") != shown:
                problems.append(f"{key}: documented default {default!r}, the flash tool's {field.default!r}")
            continue
        span = re.match(r"(\d+)–(\d+)", allowed)
        low, high = int(span.group(1)), int(span.group(2))
        if {(at.Ge, low), (at.Le, high)} != _bounds(field):
            problems.append(f"{key}: documented {low}–{high}, the flash tool's {_bounds(field)}")
        numbers = [int(n) for n in re.findall(r"\b\d+\b", default)]
        if key == "psu_ma":  # the tool leaves it to the firmware, whose default is the board's limit
            assert field.default is None
            if firmware[key][0] not in numbers or "LED_LIMIT_MA" not in default:
                problems.append(f"psu_ma: documented default {default!r}, the firmware's is board.LED_LIMIT_MA, "
                                f"{firmware[key][0]}")
        elif numbers[:1] != [field.default]:
            problems.append(f"{key}: documented default {default!r}, the flash tool's {field.default!r}")
        if key in ("psu_ma", "board_reserve_ma"):
            if firmware[key][2:] != (low, high):
                problems.append(f"{key}: documented {low}–{high}, the firmware's {firmware[key][2:]}")
            if key == "board_reserve_ma" and numbers[:1] != [firmware[key][0]]:
                problems.append(f"{key}: documented default {default!r}, the firmware's {firmware[key][0]}")
    assert not problems, "\n".join(problems)
