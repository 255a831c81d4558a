"""The MQTT topic contract (see docs/mqtt.md). One place builds every topic.

An id placed into a topic must be one topic level: never empty, and free of
``/`` (a level separator), ``+`` and ``#`` (wildcards) and NUL. Pod ids
announced by pods follow the stricter pod id grammar (protocol/ids.py),
checked on HELLO; an id that reaches a topic builder here without being one
level is a bug, refused with TopicError rather than published or subscribed.
"""
from __future__ import annotations

PREFIX = "hypnolum/v1"
SET_FILTER = f"{PREFIX}/pods/+/set"
UPDATE_FILTER = f"{PREFIX}/pods/+/update"


class TopicError(ValueError):
    """An id that is not one topic level."""


def level(value: str, what: str = "id") -> str:
    """``value`` if it is one topic level, else TopicError."""
    if not isinstance(value, str) or not value or "/" in value or "+" in value or "#" in value or "\0" in value:
        raise TopicError(f"{what} {value!r} is not one MQTT topic level (empty, or holds / + # or NUL)")
    return value


def pod(pod_id: str, leaf: str) -> str:
    return f"{PREFIX}/pods/{level(pod_id, 'pod id')}/{leaf}"


def host(host_id: str, leaf: str) -> str:
    return f"{PREFIX}/hosts/{level(host_id, 'host id')}/{leaf}"


def pod_of_update(topic: str) -> str | None:
    """The pod id of a ``.../pods/<id>/update`` topic (a part of a firmware bundle), else None."""
    parts = topic.split("/")
    if len(parts) == 5 and "/".join(parts[:3]) == f"{PREFIX}/pods" and parts[4] == "update" and parts[3]:
        return parts[3]
    return None


def pod_of_set(topic: str) -> str | None:
    """The pod id of a ``.../pods/<id>/set`` topic, else None."""
    parts = topic.split("/")
    if len(parts) == 5 and "/".join(parts[:3]) == f"{PREFIX}/pods" and parts[4] == "set" and parts[3]:
        return parts[3]
    return None


# Per-pod inputs besides set: an annotation for the recording, the participant code.
INPUT_LEAVES = ("marker", "participant")
INPUT_FILTERS = tuple(f"{PREFIX}/pods/+/{leaf}" for leaf in INPUT_LEAVES)


def pod_input(topic: str) -> tuple[str, str] | None:
    """(pod id, leaf) of a ``.../pods/<id>/marker`` or ``.../participant`` topic, else None."""
    parts = topic.split("/")
    if len(parts) == 5 and "/".join(parts[:3]) == f"{PREFIX}/pods" and parts[4] in INPUT_LEAVES and parts[3]:
        return parts[3], parts[4]
    return None
