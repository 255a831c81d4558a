"""A packed bundle's root files (host/update_parts.py): boot.py and main.py after the payload,
for a pod that predates updates over the link; what does not hold is named."""
from __future__ import annotations

import struct

import pytest

from hypnolum.flash import bundle, manifest as mf
from hypnolum.host import update_parts as up

ROOT = (("boot.py", b"import hal\n"), ("main.py", b"from pod import app\n"))


@pytest.fixture(scope="module")
def app() -> bundle.Bundle:
    return bundle.build(fmt="py")


def _blob(app: bundle.Bundle, root=ROOT) -> bytes:
    man = mf.encode(app)
    return up.pack(man, mf.tag(bytes(32), man), mf.payload(app), root)


def test_root_files_travel_after_the_payload_and_a_bundle_may_carry_none(app):
    packed = up.unpack(_blob(app))
    assert packed.root == ROOT and packed.payload == mf.payload(app) and packed.build_hash == app.build_hash
    assert up.unpack(_blob(app, ())).root == ()
    real = tuple((f.path, f.data) for f in app.root)  # what `hypnolum update` sends from a firmware tree
    assert up.unpack(_blob(app, real)).root == real


def _entry(path: str, data: bytes) -> bytes:
    return bytes([len(path)]) + path.encode() + struct.pack("<I", len(data)) + data


@pytest.mark.parametrize("tail, why", [
    (b"junk", "4 bytes after the payload that are not its root files"),
    (b"HLR1\x01" + _entry("boot.py", b"x"), "root files boot.py; it needs boot.py, main.py"),
    (b"HLR1\x02" + _entry("boot.py", b"x") + _entry("../x.py", b"y"), "root file '../x.py': root files are"),
    (b"HLR1\x02" + _entry("boot.py", b"x") + _entry("boot.py", b"y"), "root file 'boot.py': root files are"),
    (b"HLR1\x02" + _entry("boot.py", b"x") + _entry("main.py", b"yy")[:-1], "root file main.py truncated: 1 of its 2"),
    (b"HLR1\x02" + _entry("boot.py", b"x"), "root file 1 of 2 truncated"),
    (b"HLR1\x02" + _entry("boot.py", b"x") + _entry("main.py", b"y") + b"!", "1 bytes after its root files"),
])
def test_a_root_section_that_does_not_hold_is_named(app, tail, why):
    with pytest.raises(up.BadPart) as exc:
        up.unpack(_blob(app, ()) + tail)
    assert why in str(exc.value), str(exc.value)
