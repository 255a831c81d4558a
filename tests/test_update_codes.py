"""The pod keeps the update states and reasons as constants of its own (messages.POD_OWN_ENUMS):
firmware/pod/transfer.py's states and pod/update.py's and pod/slots.py's reason codes are the
values of messages.UpdateState and messages.UpdateReason."""
import re

from hypnolum import paths
from hypnolum.protocol import messages

POD = paths.FIRMWARE / "pod"


def _consts(*names: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for name in names:
        for key, value in re.findall(r"^(_?[A-Z][A-Z_]*) = const\((\d+)\)", (POD / name).read_text(), re.M):
            out[key] = int(value)
    return out


def test_the_pods_update_reasons_are_the_protocols():
    codes = _consts("update.py", "slots.py")
    ours = {k[2:].lower(): v for k, v in codes.items() if k.startswith("E_")} | {"ok": codes["OK"]}
    assert ours == {k: int(v) for k, v in messages.UpdateReason.encmapping.items()}
    moved = _consts("transfer.py")
    assert {k[3:].lower(): v for k, v in moved.items() if k.startswith("_E_")} == {
        k: v for k, v in ours.items() if k in {"auth", "manifest", "state", "crc", "range", "io", "no_key"}}


def test_the_pods_update_states_are_the_protocols():
    states = {k[1:].lower(): v for k, v in _consts("transfer.py").items()
              if k[1:].lower() in messages.UpdateState.encmapping}
    assert states == {k: int(v) for k, v in messages.UpdateState.encmapping.items()}
