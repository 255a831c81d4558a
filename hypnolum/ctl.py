"""``hypnolum set`` and ``hypnolum get``: one pod, over MQTT only (docs/cli.md).

    hypnolum set POD [--config hostd.toml] --effect aurora --palette ember --brightness 0.4
    hypnolum set POD --brightness 0.2          # dims the scene the pod shows, keeps the rest
    hypnolum set POD --night on | --stop | --json '{"scene": {"effect": "off"}}'
    hypnolum get POD [--config hostd.toml] [--output json]

``set`` builds the same ``set`` command every client sends (docs/mqtt.md,
"Commands"), checks it with hostd's own parser, publishes it and waits for its
result: on MQTT 5 on a response topic of its own with correlation data, on
3.1.1 on ``pods/<pod>/set/result`` (matched by the command's id). ``get``
prints the pod's retained state.

Exit status: 0 done; 1 refused by hostd or the pod (the reason is printed, with
the field and its allowed range when the result names them); 2 usage error
(bad arguments, a command hostd would refuse, an unusable configuration);
3 no broker, no answer within ``--timeout``, or (``get``) no state for the pod.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import re
import secrets
import sys
import time
from typing import Any, NoReturn

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from . import mqtt_options as mo
from . import pod_view as pv
from .host import commands
from .host.config import MqttConfig
from .host.topics import PREFIX, TopicError
from .host.topics import pod as pod_topic
from .protocol.ids import pod_id_problem

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_WAIT_S = 2.0


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so every usage error is exit 2 with one message."""

    def error(self, message: str) -> NoReturn:
        raise mo.UsageError(f"{self.prog}: {message}")


# -- set: the command -----------------------------------------------------------------
def _color(text: str) -> list[int]:
    """``#rrggbb``, ``rrggbb`` or ``r,g,b`` (0..255 each)."""
    text = text.strip()
    if re.fullmatch(r"#?[0-9a-fA-F]{6}", text):
        h = text.lstrip("#")
        return [int(h[i:i + 2], 16) for i in (0, 2, 4)]
    parts = text.split(",")
    if len(parts) == 3 and all(re.fullmatch(r"\s*\d{1,3}\s*", p) for p in parts):
        return [int(p) for p in parts]
    raise argparse.ArgumentTypeError(f"{text!r} is not a colour: give #rrggbb or r,g,b")


def _minute(text: str) -> int:
    """``HH:MM`` as a minute of the day."""
    m = re.fullmatch(r"(\d{1,2}):(\d{2})", text.strip())
    if not m or int(m[1]) > 23 or int(m[2]) > 59:
        raise argparse.ArgumentTypeError(f"{text!r} is not a time of day: give HH:MM")
    return int(m[1]) * 60 + int(m[2])


def _params(text: str) -> list[int]:
    try:
        return [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of integers: give e.g. 3,-2,10") from None


def _set_parser() -> _Parser:
    p = _Parser(prog="hypnolum set", description="Send one pod a set command over MQTT and wait for its result.",
                epilog="exit status: 0 done, 1 refused by hostd or the pod, 2 usage error, 3 no broker or no answer")
    p.add_argument("pod", metavar="POD", help="the pod's id")
    s = p.add_argument_group("scene (without --effect: changes only what is given of the scene the pod shows)")
    s.add_argument("--effect", help="off, solid, breathe, aurora, ... (docs/light.md)")
    s.add_argument("--brightness", type=float, metavar="0..1")
    s.add_argument("--color", type=_color, metavar="#RRGGBB", help="or r,g,b")
    s.add_argument("--palette", help="warm, ember, ocean, aurora, forest, dusk, moon")
    s.add_argument("--period-ms", type=int, metavar="MS")
    s.add_argument("--transition-ms", type=int, metavar="MS")
    s.add_argument("--params", type=_params, metavar="N,N,...", help="effect parameters")
    s.add_argument("--strobe-opt-in", action="store_true", help="the explicit opt-in a strobe scene needs")
    n = p.add_argument_group("night limits")
    n.add_argument("--night", choices=("on", "off", "schedule"))
    n.add_argument("--night-start", type=_minute, metavar="HH:MM", help="with --night schedule (default 22:00)")
    n.add_argument("--night-end", type=_minute, metavar="HH:MM", help="with --night schedule (default 07:00)")
    o = p.add_argument_group("other commands (alone)")
    o.add_argument("--stop", action="store_true", help="fade the pod to its safe level and hold it there")
    o.add_argument("--safe-mode", action="store_true", help="reset the pod into safe mode (firmware stopped)")
    o.add_argument("--json", metavar="PAYLOAD", help="send this set command (JSON) as it is")
    p.add_argument("--id", help="the command's id (default: a fresh one)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
                   help=f"how long to wait for the result (default {DEFAULT_TIMEOUT_S:g} s)")
    p.add_argument("--output", choices=("text", "json"), default="text", help="the result as text or as its JSON")
    mo.add_arguments(p)
    return p


_SCENE_FLAGS = ("effect", "brightness", "color", "palette", "period_ms", "transition_ms", "params")


def build_command(args: argparse.Namespace) -> dict[str, Any]:
    """The set command the flags ask for (without its id); UsageError if they ask for nothing,
    or for things that cannot go together."""
    scene = {key: getattr(args, key) for key in _SCENE_FLAGS if getattr(args, key) is not None}
    if args.strobe_opt_in:
        scene["strobe_opt_in"] = True
    night: dict[str, Any] = {}
    if args.night is not None:
        night["mode"] = args.night
        if args.night_start is not None:
            night["start_min"] = args.night_start
        if args.night_end is not None:
            night["end_min"] = args.night_end
    elif args.night_start is not None or args.night_end is not None:
        raise mo.UsageError("hypnolum set: --night-start and --night-end go with --night schedule")
    alone = [name for name, given in (("--json", args.json is not None), ("--stop", args.stop),
                                      ("--safe-mode", args.safe_mode)) if given]
    if len(alone) > 1 or (alone and (scene or night)):
        raise mo.UsageError(f"hypnolum set: {alone[0]} goes alone (without other command flags)")
    if args.json is not None:
        try:
            payload = json.loads(args.json)
        except ValueError as exc:
            raise mo.UsageError(f"hypnolum set: --json is not JSON: {exc}") from None
        if not isinstance(payload, dict):
            raise mo.UsageError("hypnolum set: --json must be a JSON object (a set command)")
        return payload
    if args.stop:
        return {"stop": True}
    if args.safe_mode:
        return {"safe_mode": True}
    command: dict[str, Any] = {}
    if scene:
        command["scene"] = scene
    if night:
        command["night"] = night
    if not command:
        raise mo.UsageError("hypnolum set: say what to set: --effect ..., --night ..., --stop or --json ...")
    return command


def check_command(command: dict[str, Any]) -> None:
    """Refuse (UsageError) what hostd's own parser would refuse, naming the field."""
    try:
        commands.parse(json.dumps(command).encode())
    except commands.BadCommand as exc:
        raise mo.UsageError(f"hypnolum set: hostd would refuse this command: {exc}") from None


# -- set: the result ------------------------------------------------------------------
def _allowed(result: dict[str, Any]) -> str:
    allowed = result.get("allowed")
    if isinstance(allowed, list) and len(allowed) == 2:
        return f", allowed {allowed[0]}..{allowed[1]}"
    if isinstance(allowed, list) and allowed:
        return f", allowed: {', '.join(map(str, allowed))}"
    return ""


def describe_result(pod_id: str, result: dict[str, Any], elapsed_s: float) -> str:
    """One readable line for a set result."""
    repeat = " (a repeated id: the first command's result)" if result.get("duplicate") else ""
    if result.get("ok"):
        return f"{pod_id}: done in {elapsed_s * 1000:.0f} ms{repeat}"
    field, allowed = result.get("field"), _allowed(result)
    where = f" (field {field}{allowed})" if field else (f" ({allowed.removeprefix(', ')})" if allowed else "")
    if result.get("nack"):
        detail = f": {result['error']}" if result.get("error") else ""
        return f"{pod_id}: the pod refused it: {result['nack']}{detail}{where}{repeat}"
    if result.get("busy"):
        return f"{pod_id}: hostd is busy and did not carry it out; try again later ({result.get('error')})"
    return f"{pod_id}: hostd refused it: {result.get('error', 'no reason given')}{where}{repeat}"


def _not_here(result: dict[str, Any]) -> bool:
    """A host answering that it does not hold the pod (another host may)."""
    return result.get("field") == "pod_id" and "not connected" in str(result.get("error", ""))


class _Waiter:
    """Collects the answers to one command: the first ``ok``, ``nack`` or error settles it;
    "not connected to host X" settles it only when the pod is not online anywhere (with
    several hosts on one broker, the others answer that too)."""

    GRACE_S = 3.0  # after a "not connected" answer, while the pod is online elsewhere

    def __init__(self, cmd_id: str, correlation: bytes | None, reply_topic: str, availability_topic: str):
        self.cmd_id, self.correlation = cmd_id, correlation
        self.reply_topic, self.availability_topic = reply_topic, availability_topic
        self.pod_online = False
        self.not_here: dict[str, Any] | None = None
        self.not_here_at = 0.0
        self.ignored = 0

    def take(self, message: aiomqtt.Message) -> dict[str, Any] | None:
        """The final result if this message settles the command."""
        topic = message.topic.value
        if topic == self.availability_topic:
            self.pod_online = bytes(message.payload or b"") == b"online"
            return None
        if topic != self.reply_topic:
            return None
        if self.correlation is not None:
            props = message.properties
            if getattr(props, "CorrelationData", None) != self.correlation:
                self.ignored += 1
                return None
        try:
            result = json.loads(bytes(message.payload or b""))
        except ValueError:
            self.ignored += 1
            return None
        if not isinstance(result, dict):
            self.ignored += 1
            return None
        if result.get("id") != self.cmd_id:  # on 3.1.1's set/result: another client's command
            return None
        if _not_here(result) and self.pod_online:
            if self.not_here is None:
                self.not_here, self.not_here_at = result, time.monotonic()
            return None
        return result

    def settled_by_grace(self) -> dict[str, Any] | None:
        if self.not_here is not None and time.monotonic() - self.not_here_at >= self.GRACE_S:
            return self.not_here
        return None


def _puback_codes(client: aiomqtt.Client) -> dict[int, int]:
    """PUBACK reason codes by message id (aiomqtt does not report them: a broker's ACL
    refusing an MQTT 5 publish says so only there)."""
    codes: dict[int, int] = {}
    paho = client._client
    original = paho.on_publish

    def on_publish(c, userdata, mid, reason_code, properties):  # paho's callback signature
        codes[mid] = getattr(reason_code, "value", reason_code) or 0
        original(c, userdata, mid, reason_code, properties)

    paho.on_publish = on_publish
    return codes


async def send(cfg: MqttConfig, pod_id: str, command: dict[str, Any], timeout_s: float) -> tuple[dict[str, Any], float, int]:
    """Publish one set command and wait for its result: (result, seconds, messages ignored on
    the reply topic). Raises mo.Unreachable when there is no broker or no answer."""
    async with mo.connect(cfg, "set") as (client, v5):
        codes = _puback_codes(client)
        cmd_id = command["id"]
        availability = pod_topic(pod_id, "availability")
        props = None
        correlation = None
        if v5:
            user = cfg.username or f"hypnolum-cli-{secrets.token_hex(4)}"
            reply_topic = f"{PREFIX}/replies/{user}/{pod_id}/{secrets.token_hex(8)}"
            correlation = secrets.token_bytes(8)
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = reply_topic
            props.CorrelationData = correlation
        else:
            reply_topic = pod_topic(pod_id, "set/result")
        waiter = _Waiter(cmd_id, correlation, reply_topic, availability)
        await mo.subscribe(client, reply_topic)
        await mo.subscribe(client, availability)
        started = time.monotonic()
        deadline = started + timeout_s
        # paho's publish (aiomqtt's own awaits it but hides the message id): the id finds the PUBACK's code
        info = client._client.publish(pod_topic(pod_id, "set"), json.dumps(command), 1, False, props)
        if info.rc != 0:
            raise mo.Unreachable(f"could not publish the command (paho error {info.rc})")
        inbox: asyncio.Queue[aiomqtt.Message] = asyncio.Queue()
        reader = asyncio.create_task(_read_into(client, inbox))
        try:
            while True:
                if (code := codes.get(info.mid)) is not None and code >= 0x80:
                    raise mo.Unreachable(
                        f"the broker refused the command (PUBACK reason 0x{code:02x}): its ACL may not let "
                        f"user {cfg.username or '(anonymous)'} publish to {pod_topic(pod_id, 'set')}")
                if (result := waiter.settled_by_grace()) is not None:
                    return result, time.monotonic() - started, waiter.ignored
                left = deadline - time.monotonic()
                if left <= 0:
                    raise mo.Unreachable(f"no answer from hostd within {timeout_s:g} s: is a hostd that holds pod "
                                         f"{pod_id} connected to {cfg.host}:{cfg.port}?")
                if reader.done():
                    reader.result()
                    raise mo.Unreachable(f"lost the connection to {cfg.host}:{cfg.port}")
                try:
                    message = await asyncio.wait_for(inbox.get(), min(left, 0.2))
                except TimeoutError:
                    continue
                if (result := waiter.take(message)) is not None:
                    return result, time.monotonic() - started, waiter.ignored
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)


async def _read_into(client: aiomqtt.Client, inbox: asyncio.Queue) -> None:
    try:
        async for message in client.messages:
            inbox.put_nowait(message)
    except aiomqtt.MqttError as exc:
        raise mo.Unreachable(f"lost the connection to the broker: {exc}") from None


def _pod_id(pod_id: str) -> str:
    if problem := pod_id_problem(pod_id):
        raise mo.UsageError(f"POD: {problem}")
    try:
        pod_topic(pod_id, "set")
    except TopicError as exc:
        raise mo.UsageError(f"POD: {exc}") from None
    return pod_id


def set_main(argv: list[str] | None = None) -> int:
    def main() -> int:
        try:
            args = _set_parser().parse_args(argv)
        except SystemExit as exc:  # --help
            return int(exc.code or 0)
        pod_id = _pod_id(args.pod)
        if not 0 < args.timeout <= 3600:
            raise mo.UsageError("hypnolum set: --timeout must be between 0 and 3600 s")
        command = build_command(args)
        cmd_id = args.id or command.get("id") or f"cli-{secrets.token_hex(6)}"
        command = {"id": cmd_id, **{k: v for k, v in command.items() if k != "id"}}
        check_command(command)
        cfg = mo.mqtt_config(args)
        result, elapsed, ignored = asyncio.run(send(cfg, pod_id, command, args.timeout))
        if ignored:
            print(f"hypnolum set: ignored {ignored} unreadable message(s) on the reply topic",
                  file=sys.stderr)
        if args.output == "json":
            print(json.dumps(result))
        else:
            print(describe_result(pod_id, result, elapsed))
        return mo.EXIT_OK if result.get("ok") else mo.EXIT_REFUSED

    return mo.run_tool(main)


# -- get --------------------------------------------------------------------------------
def _get_parser() -> _Parser:
    p = _Parser(prog="hypnolum get", description="Print a pod's state as hostd publishes it (retained) on MQTT.",
                epilog="exit status: 0 shown, 2 usage error, 3 no broker or no state for the pod")
    p.add_argument("pod", metavar="POD", help="the pod's id")
    p.add_argument("--wait", type=float, default=DEFAULT_WAIT_S, metavar="S",
                   help=f"how long to wait for the retained state (default {DEFAULT_WAIT_S:g} s)")
    p.add_argument("--output", choices=("text", "json"), default="text", help="readable text or the state's JSON")
    mo.add_arguments(p)
    return p


async def fetch_state(cfg: MqttConfig, pod_id: str, wait_s: float) -> tuple[dict[str, Any] | None, str | None]:
    """The pod's retained state and availability (None where the broker holds none)."""
    state_topic, availability_topic = pod_topic(pod_id, "state"), pod_topic(pod_id, "availability")
    found: dict[str, bytes] = {}
    async with mo.connect(cfg, "get") as (client, _v5):
        await mo.subscribe(client, availability_topic)  # retained messages come in subscription order
        await mo.subscribe(client, state_topic)
        messages = client.messages.__aiter__()
        try:
            async with asyncio.timeout(wait_s):
                while state_topic not in found:
                    message = await messages.__anext__()
                    found[message.topic.value] = bytes(message.payload or b"")
        except TimeoutError:
            pass
    availability = found[availability_topic].decode(errors="replace") if availability_topic in found else None
    if state_topic not in found:
        return None, availability
    try:
        state = json.loads(found[state_topic])
    except ValueError as exc:
        raise mo.Unreachable(f"the retained state of pod {pod_id} is not JSON: {exc}") from None
    if not isinstance(state, dict):
        raise mo.Unreachable(f"the retained state of pod {pod_id} is not a JSON object")
    return state, availability


def describe_state(state: dict[str, Any], availability: str | None) -> str:
    """The pod's state, one topic per line."""
    link = state.get("link", "?") + (f" ({state['reason']})" if state.get("reason") else "")
    if availability and availability != state.get("link"):
        link += f"  availability {availability}"
    caps = state.get("capabilities") or {}
    rows = [
        ("pod", (f"{state.get('pod_id')}  firmware {state.get('firmware')}  protocol {state.get('protocol')}  "
                 f"{caps.get('led_count')} LEDs")),
        ("link", f"{link}  port {state.get('port')}"),
        ("scene", pv.scene_words(state)),
        ("safety", ", ".join(pv.safety(state)) or "nothing limits the light"),
        ("power", pv.power_words(state)),
        ("eeg", pv.eeg_words(state)),
        ("quality", pv.quality_words(state)),
        ("clock", pv.clock_words(state)),
        ("counters", pv.counters_words(state)),
        ("pod", pv.pod_words(state)),
        ("updated", str(state.get("updated", "-"))),
    ]
    return "\n".join(f"{name:<9} {value}" for name, value in rows)


def get_main(argv: list[str] | None = None) -> int:
    def main() -> int:
        try:
            args = _get_parser().parse_args(argv)
        except SystemExit as exc:
            return int(exc.code or 0)
        pod_id = _pod_id(args.pod)
        if not 0 < args.wait <= 600:
            raise mo.UsageError("hypnolum get: --wait must be between 0 and 600 s")
        cfg = mo.mqtt_config(args)
        state, availability = asyncio.run(fetch_state(cfg, pod_id, args.wait))
        if state is None:
            known = f" (availability: {availability})" if availability else ""
            print(f"hypnolum: no state for pod {pod_id} on {cfg.host}:{cfg.port}{known}", file=sys.stderr)
            return mo.EXIT_NO_ANSWER
        if args.output == "json":
            print(json.dumps(state, indent=1))
        else:
            print(describe_state(state, availability))
        return mo.EXIT_OK

    return mo.run_tool(main)
