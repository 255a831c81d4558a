"""pod.json's one schema (protocol/pod_config.py): its generated files are fresh, and the pod,
the flash tool and the emulator take or refuse every value alike, in the same words.

The pod's side runs firmware/pod/config.py under the real 32-bit MicroPython.
"""
from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from hypnolum import paths
from hypnolum.emulator.pod import PodConfig, find_micropython
from hypnolum.flash import provision
from hypnolum.flash.cli import _settings, parser
from hypnolum.flash.errors import BadConfig
from hypnolum.protocol import gen_pod_config
from hypnolum.protocol.ids import is_pod_id
from hypnolum.protocol.pod_config import BOOL, CHOICE, INT, KEYS, Key, PodJsonError, problem

from test_pod_ids import BAD as BAD_IDS, GOOD as GOOD_IDS

UID = "246f28aabbcc"


def test_generated_files_are_fresh():
    assert gen_pod_config.FIRMWARE.read_text() == gen_pod_config.render_firmware(), \
        "firmware/pod/config_schema.py is stale: run `make codec`"
    assert gen_pod_config.HOST.read_text() == gen_pod_config.render_host(), \
        "protocol/pod_json.py is stale: run `make codec`"
    doc = gen_pod_config.DOC.read_text()
    assert doc == gen_pod_config.render_doc(doc), "docs/pod-config.md's key table is stale: run `make codec`"
    assert gen_pod_config.main(["--check"]) == 0


def _cases(key: Key) -> list[object]:
    """Values at and just beyond each bound of key, and of the wrong type."""
    if key.kind == INT:
        return [key.low - 1, key.low, key.high, key.high + 1, str(key.low), float(key.low), True, None, [key.low]]
    if key.kind == BOOL:
        return [True, False, 0, 1, "true", None]
    if key.kind == CHOICE:
        return [*key.choices, key.choices[0] + "x", key.choices[0][:-1], key.choices[0].swapcase(), "", 3, None]
    ok = key.first[0]
    return [ok * (key.low - 1), ok * key.low, ok * key.high, ok * (key.high + 1), "-" + ok, ok + " " + ok,
            ok + "\u00f6", ok + "'\t\x7f", "\U0001f600", 7, None, *GOOD_IDS, *BAD_IDS]


CASES = [(key.name, value) for key in KEYS for value in _cases(key)] + [("colour", 1), ("x" * 80, 0)]


def _pod_verdicts(tmp_path) -> list[list]:
    """[errors, the value the pod then holds] per case, from firmware/pod/config.py on MicroPython."""
    # UTF-8, as a hand-edited file holds it: MicroPython's json takes each \\uXXXX alone, so an
    # escaped surrogate pair would reach the pod as two characters (extmod/modjson.c:224-234, v1.28.0)
    (tmp_path / "cases.json").write_text(json.dumps([{name: value} for name, value in CASES], ensure_ascii=False),
                                         encoding="utf-8")
    code = ("import json\nfrom pod import config\n"
            "for data in json.loads(open('cases.json').read()):\n"
            "    name = list(data)[0]\n"
            f"    c = config.parse(json.dumps(data), bytes.fromhex('{UID}'))\n"
            "    print(json.dumps([c.errors, getattr(c, name, None)]))\n")
    env = dict(os.environ, MICROPYPATH=f"{paths.EMULATOR_SHIMS}:{paths.FIRMWARE}:.frozen", HYPNOLUM_POD_DIR=str(tmp_path))
    out = subprocess.run([find_micropython(), "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=30, check=False)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def _flash_verdict(name: str, value: object) -> str:
    try:
        provision.make({name: value}, where="bench.toml")
    except BadConfig as exc:
        return str(exc).removeprefix("bench.toml: ")
    return ""


def _emulator_verdict(name: str, value: object) -> str:
    try:
        PodConfig(**{name: value}).to_json()
    except PodJsonError as exc:
        return str(exc)
    return ""


def test_pod_flash_tool_and_emulator_agree_on_every_bound(tmp_path):
    pod = _pod_verdicts(tmp_path)
    assert len(pod) == len(CASES)
    problems = []
    for (name, value), (errors, held) in zip(CASES, pod):
        said = errors[0] if errors else ""
        if len(errors) > 1 or (not errors and held != value):
            problems.append(f"pod: {name}={value!r}: errors {errors}, holds {held!r}")
        if (flash := _flash_verdict(name, value)) != said:
            problems.append(f"{name}={value!r}: the pod says {said!r}, the flash tool {flash!r}")
        if value is not None and any(k.name == name for k in KEYS):  # None: the emulator leaves the key out
            if (emulated := _emulator_verdict(name, value)) != said:
                problems.append(f"{name}={value!r}: the pod says {said!r}, the emulator's config {emulated!r}")
    assert not problems, "\n".join(problems)
    refused = {name for (name, _), (errors, _held) in zip(CASES, pod) if errors}
    assert refused == {k.name for k in KEYS} | {"colour", "x" * 80}  # every key has a refused case
    # the error names the key, the value and what is allowed
    assert ["led_count: 301 is outside 1..300"] in (e for e, _ in pod)
    assert ["headset: 'cytonx' is not one of cyton none"] in (e for e, _ in pod)
    assert ["'" + "x" * 36 + "... is not a pod.json key"] in (e for e, _ in pod)  # cut to 40 characters


def test_pod_id_is_the_id_grammar():
    """The schema's pod_id is protocol/ids.py's grammar (the pod agrees with the schema, above)."""
    assert [problem("pod_id", i) == "" for i in GOOD_IDS + BAD_IDS] == [is_pod_id(i) for i in GOOD_IDS + BAD_IDS]


def test_what_the_host_writes_the_pod_takes_whole(tmp_path):
    """Every key set to other than its default, by the flash tool's options and by the emulator's
    config: the pod reads back each value, with no complaint."""
    chosen = {}
    for key in KEYS:
        if key.kind == INT:
            chosen[key.name] = key.high if key.default != key.high else key.low
        elif key.kind == BOOL:
            chosen[key.name] = not key.default
        elif key.kind == CHOICE:
            chosen[key.name] = key.choices[-1] if key.default != key.choices[-1] else key.choices[0]
        else:
            chosen[key.name] = "pod-07"
    argv = [f"--{k.replace('_', '-')}={str(v).lower() if isinstance(v, bool) else v}" for k, v in chosen.items()]
    settings = _settings(parser().parse_args(argv))
    assert settings == chosen
    written = [provision.make(settings).pod_json(), PodConfig(**chosen).to_json().encode()]
    assert json.loads(written[0]) == json.loads(written[1]) == chosen
    code = ("from pod import config\nfor name in ('a.json', 'b.json'):\n"
            f"    c = config.parse(open(name).read(), bytes.fromhex('{UID}'))\n"
            f"    print(repr((c.errors, {', '.join(f'c.{k}' for k in chosen)})))\n")
    (tmp_path / "a.json").write_bytes(written[0])
    (tmp_path / "b.json").write_bytes(written[1])
    env = dict(os.environ, MICROPYPATH=f"{paths.EMULATOR_SHIMS}:{paths.FIRMWARE}:.frozen", HYPNOLUM_POD_DIR=str(tmp_path))
    out = subprocess.run([find_micropython(), "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=30, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [repr(([], *chosen.values()))] * 2


def test_flash_options_name_the_source_of_a_bad_value(tmp_path):
    bench = tmp_path / "bench.toml"
    bench.write_text("led_count = 500\npsu_ma = 2000\n")
    with pytest.raises(BadConfig, match=re.escape(f"{bench}: led_count: 500 is outside 1..300")):
        _settings(parser().parse_args(["--config", str(bench)]))
    assert _settings(parser().parse_args(["--config", str(bench), "--led-count", "12"])) == \
        {"psu_ma": 2000, "led_count": 12}
    with pytest.raises(BadConfig, match=r"^arguments: night_blue_max: 256 is outside 0..255$"):
        _settings(parser().parse_args(["--night-blue-max", "256"]))
    help_text = parser().format_help()
    limits = help_text[help_text.index("safety limits"):help_text.index("connection")]
    assert all(f"--{k.name.replace('_', '-')}" in limits for k in KEYS if k.safety)
    assert "--led-count" not in limits
    flashing = (gen_pod_config.DOC.parent / "flashing.md").read_text()
    named = flashing[flashing.index("**safety limits**"):flashing.index("no host command")]
    assert set(re.findall(r"`(\w+)`", named)) == {k.name for k in KEYS if k.safety}
