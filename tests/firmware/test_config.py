# pod.json parsing: defaults, overrides, and bad values that never stop the pod.
from pod import config

UID = b"\x24\x6f\x28\xaa\xbb\xcc"


def test_defaults_and_pod_id_from_unique_id():
    c = config.parse(None, UID)
    assert c.pod_id == "pod-246f28aabbcc"
    assert (c.led_count, c.led_order, c.eeg_channels, c.sample_rate_hz, c.headset_baud) == (16, "GRB", 8, 250, 115200)
    assert c.render_fps == 60 and c.errors == []


def test_pod_json_overrides():
    c = config.parse(b'{"pod_id": "pod-a", "led_count": 30, "led_order": "RGB", "eeg_channels": 4}', UID)
    assert (c.pod_id, c.led_count, c.led_order, c.eeg_channels) == ("pod-a", 30, "RGB", 4)


def test_bad_values_fall_back_and_are_reported():
    c = config.parse(b'{"led_count": 0, "led_order": "XYZ", "eeg_channels": "8", "colour": 1, "render_fps": true}', UID)
    assert (c.led_count, c.led_order, c.eeg_channels, c.render_fps) == (16, "GRB", 8, 60)
    assert len(c.errors) == 5, c.errors


def test_not_json():
    c = config.parse(b"{nope", UID)
    assert c.led_count == 16 and c.errors == ["pod.json is not JSON"]


def test_eeg_batch_ms_sets_the_headset_batch():
    from pod import cyton

    c = config.parse(b'{"eeg_batch_ms": 20}', UID)
    assert c.eeg_batch_ms == 20 and c.errors == []
    assert config.parse(b'{"eeg_batch_ms": 2}', UID).eeg_batch_ms == 40  # out of bounds: the default
    assert cyton.Headset(None, 8, 115200, 250, c.eeg_batch_ms).parser.batch_samples == 5
    assert cyton.Headset(None, 16, 115200, 125, 20).parser.batch_samples == 2
    assert cyton.Headset(None, 8, 115200, 250).parser.batch_samples == 10
