"""The MQTT topic contract (see docs/mqtt.md). One place builds every topic."""
from __future__ import annotations

PREFIX = "hypnolum/v1"
SET_FILTER = f"{PREFIX}/pods/+/set"


def pod(pod_id: str, leaf: str) -> str:
    return f"{PREFIX}/pods/{pod_id}/{leaf}"


def host(host_id: str, leaf: str) -> str:
    return f"{PREFIX}/hosts/{host_id}/{leaf}"


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
