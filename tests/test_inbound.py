"""The bounded JSON decoder every MQTT payload hostd reads goes through (host/inbound.py)."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hypnolum.host import commands
from hypnolum.host.config import MqttConfig
from hypnolum.host.inbound import Inbound, InboundError, Limits, nesting, pod_input_problem

TOPIC = "hypnolum/v1/pods/pod-a/set"
NESTED = b"[" * 1000 + b"]" * 1000  # 2 KB: deeper than the json module's recursion
HUGE_INT = b"1" * 4301  # one digit over Python's int-from-string limit


def refused(payload, kind: str, inbound: Inbound | None = None) -> InboundError:
    inbound = inbound or Inbound()
    with pytest.raises(InboundError) as info:
        inbound.decode(TOPIC, payload)
    assert info.value.kind == kind, info.value
    assert str(info.value).startswith(f"{TOPIC}: "), "the error names the topic"
    assert inbound.refused.counts[kind] == 1
    return info.value


def test_size_limit_is_checked_before_parsing():
    limits = Limits(max_payload=1024)
    body = b"[" + b"1," * 400 + b"1]"
    assert len(body) <= 1024 and Inbound(limits).decode(TOPIC, body) == [1] * 401
    big = b" " * 1024 + b"1"
    err = refused(big, "size", Inbound(limits))
    assert "1025 bytes" in err.reason and "1024" in err.reason


def test_limits_come_from_the_mqtt_config():
    limits = Limits.of(MqttConfig(max_payload=2048, max_depth=4))
    assert (limits.max_payload, limits.max_depth) == (2048, 4)
    assert Limits.of(MqttConfig()) == Limits()  # 64 KB, 16 levels


def test_deep_nesting_is_refused_before_json_recurses():
    assert len(NESTED) == 2000
    err = refused(NESTED, "depth")
    assert "deeper than 16" in err.reason
    refused(b'{"a":' * 500 + b"1" + b"}" * 500, "depth")
    refused(b"[" * 100_000, "depth", Inbound(Limits(max_payload=200_000)))  # unbalanced: never parsed


def test_depth_limit_is_exact_and_ignores_brackets_in_strings():
    d = Inbound(Limits(max_depth=3))
    assert d.decode(TOPIC, b"[[[1]]]") == [[[1]]]
    refused(b"[[[[1]]]]", "depth", d)
    text = '{"t": "[[[[[[{{{{{{", "s": "\\"[[[[[[[["}'
    assert nesting(text) == 1
    assert d.decode(TOPIC, text.encode()) == {"t": "[[[[[[{{{{{{", "s": '"[[[[[[[['}


def test_long_integers_are_refused_but_not_inside_strings():
    err = refused(HUGE_INT, "number")
    assert "4301 digits" in err.reason
    refused(b'{"id": "x", "scene": {"effect": "solid", "period_ms": -' + b"9" * 4301 + b"}}", "number")
    d = Inbound()
    assert d.decode(TOPIC, b"-" + b"9" * 32) == -int("9" * 32)  # a nanosecond Unix time has 19
    refused(b"9" * 33, "number")
    assert d.decode(TOPIC, b'"' + HUGE_INT + b'"') == "1" * 4301


@pytest.mark.parametrize("payload", [b"NaN", b"Infinity", b"-Infinity", b'{"t": NaN}', b"[1e999]", b"-1e400"])
def test_non_finite_numbers_are_refused(payload):
    err = refused(payload, "number")
    assert "not a finite number" in err.reason


def test_finite_extremes_are_kept():
    assert Inbound().decode(TOPIC, b"[1e308, -2.5e-300, 0.1]") == [1e308, -2.5e-300, 0.1]


@pytest.mark.parametrize("payload", [b"\xff", b'{"text": "\xc3"}', b'"\xed\xa0\x80"', '"x"'.encode("utf-16")])
def test_non_utf8_is_refused(payload):
    assert "not UTF-8" in refused(payload, "utf8").reason


def test_lone_surrogate_escapes_are_refused_pairs_kept():
    refused(b'{"text": "a\\ud800b"}', "utf8")
    refused(b'{"\\udfff": 1}', "utf8")
    assert Inbound().decode(TOPIC, b'"\\ud83d\\ude00"') == "\U0001F600"


def test_invalid_json_names_the_place():
    err = refused(b'{"scene": {"effect": }', "json")
    assert err.reason.startswith("invalid JSON:") and "column" in err.reason


def test_refusals_are_counted_by_kind_and_quiet_on_request():
    d = Inbound()
    for payload in (NESTED, HUGE_INT, b"NaN", b"\xff", b"{"):
        with pytest.raises(InboundError):
            d.decode(TOPIC, payload)
    with pytest.raises(InboundError):
        d.decode(TOPIC, NESTED, count=False)
    assert d.refused.to_json() == {"size": 0, "utf8": 1, "depth": 1, "number": 2, "json": 1, "value": 0}
    assert d.refused.total == 5


def test_participant_code_must_match_whole_and_marker_time_be_finite():
    assert pod_input_problem("participant", {"participant": "P017\n"})[0] == "participant"
    assert pod_input_problem("participant", {"participant": "P017"}) is None
    assert pod_input_problem("marker", {"text": "x", "t": float("nan")})[0] == "t"
    assert pod_input_problem("marker", {"text": "x", "t": float("inf")})[0] == "t"
    assert pod_input_problem("marker", {"text": "x", "t": True})[0] == "t"
    assert pod_input_problem("marker", {"text": "x", "t": 1764254400.5}) is None
    assert pod_input_problem("marker", {"text": "x"}) is None


@pytest.mark.parametrize("payload,words", [
    (NESTED, "deeper than 16"),
    (b'{"id": "c1", "scene": {"effect": "solid", "period_ms": ' + HUGE_INT + b"}}", "4301 digits"),
    (b'{"id": "c1", "scene": {"effect": "solid", "brightness": NaN}}', "not a finite number"),
    (json.dumps({"id": "c1", "scene": {"effect": "solid"}, "pad": "x" * 70_000}).encode(), "more than the limit"),
])
def test_set_commands_are_refused_with_a_bad_command(payload, words):
    with pytest.raises(commands.BadCommand, match=words) as info:
        commands.parse(payload)
    assert info.value.result()["ok"] is False
    with pytest.raises(commands.BadCommand):
        commands.peek_id(payload)


def _depth(value) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.sampled_from('ab[]{}"\\\n:,é😀')),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None)
@given(_JSON, st.booleans())
def test_nesting_is_the_parsers_depth_and_good_json_passes(value, ascii_only):
    text = json.dumps(value, ensure_ascii=ascii_only)
    assert nesting(text) == _depth(value)
    d = Inbound(Limits(max_depth=64))
    assert d.decode(TOPIC, text.encode()) == value


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300) | st.text(alphabet=st.sampled_from('[]{}"\\01e-.,:NaIfinty \x00'), max_size=300)
       .map(str.encode))
def test_any_payload_decodes_or_is_refused_with_an_inbound_error(payload):
    try:
        Inbound(Limits(max_depth=4)).decode(TOPIC, payload)
    except InboundError:
        pass
