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
    assert sorted(c.errors) == [
        "'colour' is not a pod.json key",
        "eeg_channels: '8' is not an integer",
        "led_count: 0 is outside 1..300",
        "led_order: 'XYZ' is not one of RGB RBG GRB GBR BRG BGR RGBW GRBW BRGW WRGB WGRB",
        "render_fps: True is not an integer",
    ], c.errors


def test_the_led_choices_are_the_drivers():
    """pod.json's LED types and colour orders (protocol/pod_config.py) are those ledwire drives."""
    from pod import ledwire
    from pod.config_schema import KEYS

    assert KEYS["led_order"][4] == ledwire.ORDERS + ledwire.ORDERS_W
    assert sorted(KEYS["led_type"][4]) == sorted(ledwire.KINDS)
    for order in KEYS["led_order"][4]:
        ledwire.order_index(order)


def test_safety_limits_default_to_the_boards():
    from pod import board

    c = config.parse(b"{}", UID)
    assert (c.psu_ma, c.led_ma, c.led_idle_ma) == (board.LED_LIMIT_MA, board.LED_MA_PER_CHANNEL,
                                                   board.LED_IDLE_MA_PER_LED)
    assert (c.brightness_max, c.fade_after_ms, c.strobe_enabled) == (255, 2000, False)


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
