"""Hostile MQTT input for hostd, as hypothesis strategies.

A :class:`Shot` is one message on a topic hostd subscribes to:

* ``pods/<id>/set``, ``pods/<id>/marker``, ``pods/<id>/participant`` (hostd's main connection);
* ``circles/<c>/definition`` and ``circles/<c>/timeline``, retained or not (the circles connection);
* ``pods/<id>/eeg`` of the pods of a defined circle (read by every circle host).

Payloads mix the shapes hostd expects, filled with hostile values, with
generic JSON-ish structures (deep nesting, huge integers, NaN and Infinity,
wrong types, long and odd strings), binary garbage, and payloads near and over
64 KB. Ids in topics are path-like, wildcard-like (look-alikes: a real ``+`` or
``#`` cannot be published) or very long; real wildcards go into payload ids.
Sizes and depths are drawn as numbers and the text is built from them, so a
64 KB payload costs hypothesis a few choices, not 64 000.

:func:`stream` draws any number of shots (hypothesis's generate phase under
``@given``, seeded, no shrinking) in a process of its own.
"""
from __future__ import annotations

import itertools
import json
import multiprocessing
import queue
import signal
from collections.abc import Iterator
from dataclasses import dataclass

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from hypnolum.procs import die_with_parent

PREFIX = "hypnolum/v1"
POD = "pod-01"  # the pod that is online during a fuzz run
EEG_PODS = ("fz-eeg-a", "fz-eeg-b", POD)  # the pods of the circles that make hostd read EEG topics
# circles defined by the rig (never fuzzed, so hostd keeps reading those pods' EEG)
EEG_CIRCLES = {
    "fz-eeg-alpha": {"pods": list(EEG_PODS), "drive": "alpha", "group_id": 7},
    "fz-eeg-plv": {"pods": list(EEG_PODS), "drive": "plv", "group_id": 8},
}
CIRCLES = ("c1", "c2", "c3")  # few names: definitions and timelines of one circle meet
LEAVES = ("set", "marker", "participant", "definition", "timeline", "eeg")
MAX_TOPIC = 65535  # bytes in an MQTT topic name


@dataclass(frozen=True, repr=False)
class Shot:
    """One MQTT message for hostd."""

    leaf: str  # one of LEAVES
    name: str  # the pod id or circle name in the topic
    payload: bytes
    retain: bool = False
    kind: str = ""  # how the payload was made

    @property
    def topic(self) -> str:
        if self.leaf in ("definition", "timeline"):
            return f"{PREFIX}/circles/{self.name}/{self.leaf}"
        return f"{PREFIX}/pods/{self.name}/{self.leaf}"

    def __repr__(self) -> str:  # short: hypothesis writes one per example it draws
        return f"Shot({self.describe(40)})"

    def describe(self, limit: int = 160) -> str:
        """Topic, flags, size and the start of the payload: enough to reproduce by eye."""
        topic = self.topic if len(self.topic) <= limit else f"{self.topic[:limit]}... ({len(self.topic)} chars)"
        head = self.payload[:limit]
        more = f"... ({len(self.payload)} bytes)" if len(self.payload) > limit else ""
        return f"{topic}{' (retained)' if self.retain else ''} [{self.kind}]: {head!r}{more}"


class Raw(str):
    """JSON text put into a document as it is (numbers JSON can write but Python would not)."""


def to_json(value: object) -> str:
    """Compact JSON; :class:`Raw` pieces verbatim, NaN and Infinity as Python's json writes them."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{to_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(to_json(v) for v in value) + "]"
    return json.dumps(value)


# -- values -------------------------------------------------------------------
FIELDS = ("id", "scene", "night", "safe_mode", "effect", "brightness", "color", "transition_ms", "period_ms",
          "palette", "strobe_opt_in", "params", "mode", "start_min", "end_min", "text", "t", "participant",
          "pods", "group_id", "drive", "rate_hz", "window_s", "alpha_full_uv2", "alpha_tau_s", "lead_ms",
          "epoch_ns", "events", "at_ns", "seq", "n", "channels", "samples", "scale_uv", "t_host", "t_host_last",
          "gap", "__proto__", "", "\u0000")
NUMBER_TEXTS = ("NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1e-400", "-0", "-0.0", "0e0", "1E+2",
                "18446744073709551616", "-9223372036854775809", "1.7976931348623157e308", "5e-324")


@st.composite
def huge_integer(draw) -> Raw:
    """An integer literal of thousands of digits (Python refuses to read more than 4300)."""
    digits = draw(st.sampled_from([20, 310, 4299, 4300, 4301, 5000, 20000, 60000]) | st.integers(1, 9000))
    return Raw(("-" if draw(st.booleans()) else "") + "9" * digits)


@st.composite
def long_string(draw) -> str:
    n = draw(st.sampled_from([64, 65, 200, 256, 1000, 4096, 30000, 70000]) | st.integers(0, 5000))
    char = draw(st.sampled_from(["x", "\u00e9", "\U0001f600", "\\", '"', "\n", "\u202e", "/", "#", "\ud800"]))
    return char * n


odd_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", " ", "\n", "P017\n", "../../../tmp/x", "a/+/#", "#", "+", "$SYS", "\u0000", "\ud800",
                     "%s%n", "{}", "NaN", "null", "\u202epod"]),
)
numbers = st.one_of(
    st.integers(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(NUMBER_TEXTS).map(Raw),
)
leaves = st.one_of(st.none(), st.booleans(), numbers, odd_text)
keys = st.sampled_from(FIELDS) | st.text(max_size=12)
json_values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(keys, inner, max_size=6),
    max_leaves=12,
)


def either(good: st.SearchStrategy) -> st.SearchStrategy:
    """Mostly a value hostd would take, sometimes anything (big ones rarely)."""
    return st.one_of(good, good, good, good, good, good, leaves, json_values, huge_integer() | long_string())


def shaped(required: dict, optional: dict) -> st.SearchStrategy:
    """A JSON object with these fields (each good or hostile), sometimes with stray ones."""
    base = st.fixed_dictionaries({k: either(v) for k, v in required.items()},
                                 optional={k: either(v) for k, v in optional.items()})
    return st.tuples(base, st.dictionaries(keys, json_values, max_size=2) | st.just({})).map(
        lambda parts: {**parts[0], **parts[1]})


# -- the shapes hostd reads ---------------------------------------------------------
u8, u16 = st.integers(0, 255), st.integers(0, 65535)
EFFECTS = ("off", "solid", "breathe", "slow_wave", "aurora", "candle", "ripple", "palette_drift", "starfield",
           "tide", "heartbeat", "alpha_bloom", "circle", "strobe")
scene = shaped(
    {"effect": st.sampled_from(EFFECTS)},
    {"brightness": st.floats(0, 1), "color": st.lists(u8, min_size=3, max_size=3), "transition_ms": u16,
     "period_ms": u16, "palette": st.sampled_from(["warm", "ember", "ocean", "moon"]),
     "strobe_opt_in": st.booleans(), "params": st.lists(st.integers(-32768, 32767), max_size=8)},
)
night = shaped({"mode": st.sampled_from(["off", "on", "schedule"])},
               {"start_min": st.integers(0, 1439), "end_min": st.integers(0, 1439)})
set_command = shaped({}, {"id": st.text(max_size=64), "scene": scene, "night": night, "safe_mode": st.just(True)})
marker = shaped({"text": st.text(min_size=1, max_size=80)}, {"t": st.floats(1.5e9, 2.5e9)})
participant = shaped({"participant": st.from_regex(r"[A-Za-z0-9_-]{1,32}", fullmatch=True)}, {})
pod_ids = st.sampled_from([POD, "pod-02", "fz-eeg-a", "#", "+", "a/+/#", "", "../x", "$SYS/x"]) | st.text(max_size=20)
definition = shaped(
    {"pods": st.lists(pod_ids, min_size=1, max_size=4)},
    {"group_id": u16, "drive": st.sampled_from(["plv", "alpha"]), "rate_hz": st.floats(4, 50),
     "window_s": st.floats(0.25, 4), "alpha_full_uv2": st.floats(1, 1e6), "alpha_tau_s": st.floats(0.04, 1),
     "lead_ms": st.integers(0, 10**6)},
)
instants = st.integers(1, 4 * 10**18) | st.integers(-(10**30), 10**30)
timeline = shaped(
    {"epoch_ns": instants},
    {"period_us": st.integers(4000, 1_000_000), "events": st.lists(shaped({"at_ns": instants, "scene": scene}, {}),
                                                                   max_size=3)},
)


@st.composite
def eeg_batch(draw) -> dict:
    """A batch as hostd publishes it: n rows of channels values; one value may be hostile, rows may be ragged."""
    n = draw(st.integers(0, 12))
    channels = draw(st.integers(1, 8))
    amplitude = draw(st.floats(0, 1e6))
    samples: list = [[round(amplitude * ((i * 7 + c * 3) % 11 - 5) / 5, 3) for c in range(channels)] for i in range(n)]
    if n and draw(st.booleans()):
        row, col = draw(st.integers(0, n - 1)), draw(st.integers(0, channels))
        odd = draw(leaves)
        samples[row][min(col, channels - 1):col + 1] = [odd] if col < channels else [odd, odd]  # replace or add
    fields = draw(shaped(
        {"seq": st.integers(0, 2**32), "n": st.just(n), "rate_hz": st.sampled_from([250.0, 125.0, 1e-300, 1e300]),
         "scale_uv": st.floats(0.001, 1.0), "t_host_last": st.floats(1.5e9, 2.5e9), "samples": st.just(samples)},
        {"t_host": st.floats(1.5e9, 2.5e9), "channels": st.just(channels), "gap": st.booleans()},
    ))
    return fields


SHAPES = {"set": set_command, "marker": marker, "participant": participant, "definition": definition,
          "timeline": timeline, "eeg": eeg_batch()}


# -- whole payloads --------------------------------------------------------------
@st.composite
def deep(draw) -> str:
    """Nesting far deeper than a parser's recursion limit, alone or inside a good shape."""
    depth = draw(st.sampled_from([100, 999, 1000, 1001, 3000, 10000, 32000]) | st.integers(1, 40000))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}"), ('[{"scene":', "}]"), ("[", "")]))
    depth = min(depth, 70000 // len(opener + closer))  # about 64 KB at most
    core = opener * depth + "0" + closer * depth
    wrap = draw(st.sampled_from(["{}", '{"id":"d","scene":{}}', '{"pods":[{}]}', '{"text":{}}', '{"samples":{}}',
                                 '{"events":[{}]}', '{"participant":{}}']))
    return core if draw(st.booleans()) else wrap.replace("{}", core, 1)


@st.composite
def oversized(draw) -> bytes:
    """A payload of about 64 KB or more: padded good commands, long lists, long strings."""
    size = draw(st.sampled_from([65535, 65536, 65537, 70000, 131072, 262144]) | st.integers(60000, 70000))
    form = draw(st.sampled_from(["pad", "space", "list", "string", "deep-list"]))
    if form == "pad":
        head = '{"id":"big","scene":{"effect":"solid"},"pad":"'
        return (head + "x" * max(0, size - len(head) - 2) + '"}').encode()
    if form == "space":
        return ('{"id":"ws","scene":{"effect":"solid"}' + " " * size + "}").encode()
    if form == "list":
        return ("[" + ",".join(["0"] * (size // 2)) + "]").encode()
    if form == "string":
        return json.dumps("\u00e9" * (size // 2)).encode()
    return ('{"pods":[' + ",".join(['"p"'] * (size // 4)) + "]}").encode()


garbage = st.one_of(
    st.binary(max_size=300),
    st.sampled_from([b"", b"\x00", b"\xff\xfe{", b"\xef\xbb\xbf{}", b'{"id":"\xff"}', b'{"a":1}\x00junk',
                     b"NaN", b"Infinity", b"-Infinity", b"null", b"true", b"[]", b"{}", b'"x"', b"1e400",
                     b'{"a":1,"a":2}', b"{" * 3, b"]" * 3]),
)


KINDS = ("shape", "json", "deep", "number", "oversized", "garbage")
_WEIGHTED = ("shape",) * 10 + ("json",) * 4 + ("deep",) * 2 + ("number", "oversized") + ("garbage",) * 2


@st.composite
def payload(draw, leaf: str) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(_WEIGHTED))
    if kind == "shape":
        return kind, to_json(draw(SHAPES[leaf])).encode("utf-8", "surrogatepass")
    if kind == "json":
        return kind, to_json(draw(json_values)).encode("utf-8", "surrogatepass")
    if kind == "deep":
        return kind, draw(deep()).encode()
    if kind == "number":
        value = draw(numbers | huge_integer())
        return kind, to_json(draw(st.sampled_from([value, {"id": "n", "scene": {"effect": "solid",
                                                                                 "brightness": value}},
                                                   {"seq": value}, {"epoch_ns": value}, {"t": value,
                                                                                         "text": "m"}]))).encode()
    if kind == "oversized":
        return kind, draw(oversized())
    return kind, draw(garbage)


# -- topics ---------------------------------------------------------------------------
# a broker drops a client whose topic holds a wildcard, a control character or a non-character
_TOPIC_CHARS = st.characters(blacklist_categories=("Cc", "Cs", "Cn"), blacklist_characters="+#/\ufffe\uffff")
odd_ids = st.one_of(
    st.text(_TOPIC_CHARS, min_size=1, max_size=24),
    st.sampled_from(["..", ".", "~", "$SYS", " ", "pod 01", "\uff0b", "\uff03", "%2B", "%23", "%2e%2e", "\u202e",
                     "NUL", "con", "-", "a" * 64, "a" * 65, "\U0001f600"]),
    st.integers(1, MAX_TOPIC - 40).map(lambda n: "L" * n),  # up to the topic length limit
    st.sampled_from(["../../tmp/x", "a/b"]),  # more levels: matches no filter hostd uses
)


def topic_name(leaf: str) -> st.SearchStrategy:
    if leaf == "eeg":
        return st.sampled_from(EEG_PODS)
    if leaf in ("definition", "timeline"):
        return st.sampled_from(CIRCLES) | odd_ids
    return st.sampled_from([POD, POD, "pod-02"]) | odd_ids


@st.composite
def shots(draw) -> Shot:
    leaf = draw(st.sampled_from(LEAVES))
    name = draw(topic_name(leaf))
    kind, data = draw(payload(leaf))
    if leaf == "set" and name == POD and b"safe_mode" in data:
        name = "pod-02"  # the online pod must stay up: a good safe_mode would take it out of service
    retain = leaf in ("definition", "timeline") and draw(st.booleans())
    return Shot(leaf, name, data, retain, kind)


# -- drawing them ----------------------------------------------------------------------------
def _produce(count: int, seed: int, out) -> None:
    """In a process of its own: put ``count`` hypothesis-drawn shots on ``out``, then None."""
    die_with_parent(signal.SIGTERM)()  # never outlive the fuzzer, however it ends
    made = 0
    for run in itertools.count(seed):  # hypothesis may end a run early: go on with the next seed
        if made >= count:
            break

        @hypothesis_seed(run)
        @settings(max_examples=count - made, phases=[Phase.generate], database=None, deadline=None,
                  suppress_health_check=list(HealthCheck))
        @given(shots())
        def draw(shot: Shot) -> None:
            nonlocal made
            out.put(shot)
            made += 1

        draw()
    out.put(None)


def stream(count: int, seed: int) -> Iterator[Shot]:
    """``count`` shots drawn by hypothesis (generate phase only, seeded). They are drawn in a
    process of its own, so drawing goes on while hostd reads the last batch."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue(maxsize=1024)
    proc = ctx.Process(target=_produce, args=(count, seed, out), name="fuzz shots", daemon=True)
    proc.start()
    try:
        while True:
            try:
                shot = out.get(timeout=1.0)
            except queue.Empty:
                if not proc.is_alive():
                    raise RuntimeError(f"the shot generator ended with status {proc.exitcode}") from None
                continue
            if shot is None:
                return
            yield shot
    finally:
        proc.terminate()
        proc.join()
