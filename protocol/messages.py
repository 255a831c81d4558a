"""Pod wire protocol v1: every message, defined once.

This module is the specification. The host codec (codec.py) parses and builds
with these definitions; the generator (gen_firmware.py) turns them into the
struct-based MicroPython codec in firmware/pod/wire.py; the schema fingerprint
(schema.py) is a hash of them, and each message has a layout hash of its own
(schema.Message.layout_hash): a host uses every message whose layout a pod
shares and refuses a pod only when a CORE message differs (docs/protocol.md,
"Compatibility").

Conventions: little-endian integers; strings are UTF-8 with a u8 length prefix;
EEG samples are carried exactly as the Cyton sends them (24-bit big-endian
two's complement), so the pod copies them without converting.

A frame on the wire is   COBS( header | payload | crc32 ) 0x00   (see codec.py).
"""
from construct import (
    Array,
    Enum,
    Float32l,
    GreedyBytes,
    Int8ul,
    Int16sl,
    Int16ul,
    Int32sl,
    Int32ul,
    Int64ul,
    PascalString,
    PrefixedArray,
    Struct,
)

PROTOCOL_VERSION = 1

# Largest decoded frame (header + payload + CRC) either side accepts.
MAX_FRAME = 1024
# CRC-32/IEEE (zlib.crc32 / binascii.crc32) over header + payload, little-endian.
CRC_SIZE = 4

Header = Struct(
    "version" / Int8ul,
    "type" / Int8ul,
    "seq" / Int16ul,  # per-direction frame counter, wraps at 2**16
)
HEADER_SIZE = Header.sizeof()

# ---------------------------------------------------------------------------
# Enumerations shared by both ends
# ---------------------------------------------------------------------------
Effect = Enum(
    Int8ul,
    off=0,
    solid=1,
    breathe=2,
    slow_wave=3,
    aurora=4,
    candle=5,
    ripple=6,
    palette_drift=7,
    starfield=8,
    tide=9,
    heartbeat=10,
    alpha_bloom=11,  # brightness and hue follow the pod's own alpha power
    circle=12,  # follows the group value hostd sends (GROUP_VALUE)
    strobe=13,  # 8-13 Hz; needs pod.json strobe_enabled AND SCENE_FLAG_STROBE_OPT_IN
)

# Palettes the pod holds (firmware/pod/palette.py); a scene picks one by id.
Palette = Enum(Int8ul, warm=0, ember=1, ocean=2, aurora=3, forest=4, dusk=5, moon=6)

NightMode = Enum(Int8ul, off=0, on=1, schedule=2)

# Who chose the scene a pod shows (SceneShown.source)
SceneSource = Enum(
    Int8ul,
    set=0,  # a SCENE (or FADE_SAFE) command
    timeline=1,  # a SCENE_AT that came due (a circle's shared timeline)
    pod=2,  # the pod itself: the fade to safe after link silence
)

# Animation period of each effect, in ms: (lowest, highest, default), or None for an
# effect without one (its period_ms is ignored). The pod refuses a period outside the
# range (NACK bad_param naming period_ms and the range); hostd sends the default when a
# scene names none. firmware/pod/effects.py reads the ranges from the generated wire.py.
EFFECT_PERIODS = {
    "off": None,
    "solid": None,
    "breathe": (100, 65535, 4000),
    "slow_wave": (1000, 65535, 8000),
    "aurora": (2000, 65535, 20000),
    "candle": None,
    "ripple": (1000, 65535, 4000),
    "palette_drift": (1000, 65535, 20000),
    "starfield": None,
    "tide": (2000, 65535, 10000),
    "heartbeat": (500, 3000, 1000),
    "alpha_bloom": None,
    "circle": None,
    "strobe": (77, 125, 100),  # 13..8 Hz
}

NackReason = Enum(
    Int8ul,
    bad_message=1,  # payload did not decode
    unknown_type=2,  # message type the pod does not handle
    unknown_effect=3,
    bad_param=4,
    unsupported=5,
    busy=6,
    safety=7,  # refused by the safety governor
    unavailable=8,  # asked for data the pod no longer holds (e.g. replay beyond its ring)
)

LogLevel = Enum(Int8ul, debug=10, info=20, warning=30, error=40)

# An update over the link (docs/update.md "The transfer"): where the pod is with it
UpdateState = Enum(
    Int8ul,
    idle=0,  # no update under way
    manifest=1,  # UPDATE_BEGIN taken: the manifest's bytes are arriving (UPDATE_DATA part 0)
    data=2,  # the manifest is authentic: the payload's bytes are arriving (part 1)
    committed=3,  # verified and switched: the pod resets into the new build, on trial
    refused=4,  # the manifest was refused (reason): a new UPDATE_BEGIN starts over
    confirmed=5,  # UPDATE_CONFIRM: the build on trial stays
)

# Why the pod's update store refused (firmware/pod/update.py E_*, the same numbers)
UpdateReason = Enum(
    Int8ul,
    ok=0,
    auth=1,  # the tag is not the manifest's HMAC under this pod's key
    manifest=2,  # not a manifest, truncated, too long, or its sizes disagree with UPDATE_BEGIN
    path=3,  # a path outside the slot, or twice
    space=4,  # the files do not fit
    state=5,  # not now: no slots, a build on trial, nothing begun, another transfer
    crc=6,  # a chunk's CRC-32 did not match
    range=7,  # a chunk outside the bundle or off its 64-byte blocks
    incomplete=8,  # commit before every byte arrived
    hash=9,  # a file's sha256 differs (its bytes count as missing again)
    io=10,  # the filesystem refused
    no_key=11,  # no update key was provisioned
)

# UpdateData.part
UPDATE_PART_MANIFEST = 0  # offset is into the manifest
UPDATE_PART_PAYLOAD = 1  # offset is into the slot files concatenated in manifest order
UPDATE_BLOCK = 64  # a chunk starts on a multiple of this; its length is one too unless it ends its part
UPDATE_CHUNK = 960  # the largest chunk: a multiple of UPDATE_BLOCK that fits a frame (MAX_FRAME)
UPDATE_TAG_SIZE = 32  # HMAC-SHA256

# Bits of EegBatch.flags
EEG_FLAG_GAP_BEFORE = 0x01  # samples were lost between the previous batch and this one
EEG_FLAG_REPLAY = 0x02  # re-sent from the pod's ring in answer to EEG_REPLAY

# Bits of Power.flags
POWER_FLAG_TEMP_FAULT = 0x01  # no valid DS18B20 reading within a few seconds: derated to the floor
POWER_FLAG_THERMAL = 0x02  # derating for temperature (above LED_DERATE_START_C)
POWER_FLAG_HOT_OFF = 0x04  # at or above LED_OFF_C: dark
POWER_FLAG_UNDERVOLT = 0x08  # the 5 V rail sagged: the current limit is lowered until it recovers
POWER_FLAG_VIN_CUTOFF = 0x10  # the 5 V rail fell below the cut-off: dark
POWER_FLAG_VIN_FAULT = 0x20  # VIN sense unreadable: no under-voltage limit

# SafeMode.confirm: a frame must carry this to send a pod into safe mode
SAFE_MODE_CONFIRM = 0x5AFE

# Bits of Scene.flags
SCENE_FLAG_STROBE_OPT_IN = 0x01  # the sender explicitly asks for a stroboscopic effect

# Bits of SceneShown.state
SHOWN_NIGHT = 0x01  # night limits hold now (NIGHT_MODE on, or inside its schedule)
SHOWN_LINK_SAFE = 0x02  # the fade to safe after link silence (source "pod")
SHOWN_STOPPED = 0x04  # FADE_SAFE: faded to the safe glow and held until the next SCENE

# LedPreview: the strip averaged down to at most this many segments, at most this often
LED_PREVIEW_MAX_SEGMENTS = 32
LED_PREVIEW_MS = 200  # 5 a second

# Nack.detail: empty, or this (the refused field and the range it allows)
NACK_NO_FIELD = 0xFF  # NackDetail.field / .item: none
NackDetail = Struct(
    "field" / Int8ul,  # index of the failing field in the refused message's Struct (NACK_NO_FIELD: none)
    "item" / Int8ul,  # index inside that field, for a list (params) or array (color); NACK_NO_FIELD: the whole field
    "lo" / Int32sl,  # the range the field (or item) allows, inclusive; for a list without item: its item count
    "hi" / Int32sl,
)

# Hello.table: one of these per message the pod knows, back to back
HelloTableEntry = Struct(
    "type_id" / Int8ul,
    "layout_hash" / Int16ul,  # schema.Message.layout_hash of the pod's definition
)

# ---------------------------------------------------------------------------
# Messages. Type ids are part of the wire contract; never reuse one.
# ---------------------------------------------------------------------------
Hello = Struct(  # pod -> host, at boot and in answer to CONNECT
    "pod_id" / PascalString(Int8ul, "utf8"),
    "fw_version" / PascalString(Int8ul, "utf8"),
    "protocol_version" / Int8ul,
    "fingerprint" / Int32ul,
    "build_hash" / Int32ul,  # hash of the firmware files the pod runs (0: unknown)
    "boot_id" / Int32ul,  # random per boot: a changed value means the pod rebooted
    "led_count" / Int16ul,
    "eeg_channels" / Int8ul,
    "sample_rate_hz" / Int16ul,
    # the pod's message table: a HelloTableEntry per message it knows. Empty from a pod
    # built before the table existed: the host looks its fingerprint up in
    # protocol/known_schemas.json instead
    "table" / GreedyBytes,
)

Connect = Struct(  # host -> pod: start a session; the pod answers HELLO
    "protocol_version" / Int8ul,
    "fingerprint" / Int32ul,
    "host_id" / PascalString(Int8ul, "utf8"),
)

Status = Struct(  # pod -> host, heartbeat once a second
    "uptime_ms" / Int32ul,
    "ticks_ms" / Int32ul,  # pod clock (wraps at 2**30 on the ESP32)
    "rx_frames" / Int32ul,
    "rx_errors" / Int32ul,
    "tx_frames" / Int32ul,
    "eeg_samples" / Int32ul,
    "eeg_gaps" / Int32ul,
    "eeg_dropped" / Int32ul,
    "frames_rendered" / Int32ul,
    "render_overruns" / Int32ul,
    "mem_free" / Int32ul,
    "effect" / Effect,
    "brightness" / Int8ul,
)

Power = Struct(  # pod -> host, telemetry once a second: the LED current limit and why (docs/light.md)
    "temp_c16" / Int16sl,  # hottest DS18B20, 1/16 degC; -32768: no valid reading
    "vin_mv" / Int16ul,  # the 5 V rail (VIN sense); 0: unreadable
    "limit_ma" / Int16ul,  # the governor's current cap now (lowest of psu, per output, thermal, supply)
    "full_ma" / Int16ul,  # the cap with no derating (lower of psu_ma - board_reserve_ma and the per-output limit)
    "flags" / Int8ul,  # POWER_FLAG_*
)

SafeMode = Struct(  # host -> pod, command: ACK, then reset into safe mode (REPL only, LEDs dark)
    "confirm" / Int16ul,  # SAFE_MODE_CONFIRM, else NACK bad_param (a confused sender cannot reset a pod)
)

Ping = Struct(  # host -> pod, keepalive and clock-sync probe
    "nonce" / Int32ul,
    "host_time_us" / Int64ul,
)

Pong = Struct(  # pod -> host, answer to PING
    "nonce" / Int32ul,
    "host_time_us" / Int64ul,
    "pod_rx_us" / Int32ul,  # pod ticks_us when PING arrived
    "pod_tx_us" / Int32ul,  # pod ticks_us when PONG left
)

EegBatch = Struct(  # pod -> host, telemetry (not acknowledged)
    "first_seq" / Int32ul,  # sample sequence number of the first sample
    "ticks_ms" / Int32ul,  # pod clock when the first sample was read
    "channels" / Int8ul,
    "flags" / Int8ul,  # EEG_FLAG_*
    # n_samples x channels x int24 big-endian, n_samples = len / (3 * channels)
    "samples" / GreedyBytes,
)

EegBands = Struct(  # pod -> host, telemetry at >= 4 Hz
    "last_seq" / Int32ul,  # sequence number of the newest sample in the window
    "ticks_ms" / Int32ul,  # pod clock when that sample was read
    "channels" / Int8ul,
    "window_ms" / Int16ul,  # length of the sliding window
    "railed" / Int16ul,  # bit per channel: at >= 90 % of full scale
    "near_railed" / Int16ul,  # bit per channel: at >= 75 % of full scale
    # channels x (delta, theta, alpha, beta, gamma) absolute band power in uV^2
    "powers" / PrefixedArray(Int8ul, Float32l),
)

EegReplay = Struct(  # host -> pod, command: re-send samples still held in the pod's ring
    "from_seq" / Int32ul,
    "count" / Int16ul,
)

# A scene: the fields SCENE, SCENE_AT and SCENE_SHOWN carry, in this order. Each end holds
# it as one value, generated from these (RECORDS): the pod's wire.Scene, the host's values.Scene.
MAX_SCENE_PARAMS = 8
SCENE_FIELDS = (
    "effect" / Effect,
    "brightness" / Int8ul,  # 0..255, further limited by the pod's safety governor
    "color" / Array(3, Int8ul),  # r, g, b
    "transition_ms" / Int16ul,
    "period_ms" / Int16ul,  # animation period for animated effects
    "palette" / Palette,  # for the effects that draw from a palette
    "flags" / Int8ul,  # SCENE_FLAG_*
    "params" / PrefixedArray(Int8ul, Int16sl),  # effect-specific, at most MAX_SCENE_PARAMS
)

Scene = Struct(*SCENE_FIELDS)  # host -> pod, command (answered ACK or NACK)

NightModeSet = Struct(  # host -> pod, command: low-blue, low-brightness night limits
    "mode" / NightMode,
    "start_min" / Int16ul,  # schedule: night starts at this minute of the local day (0..1439)
    "end_min" / Int16ul,  # schedule: and ends at this one (may wrap past midnight)
    "now_min" / Int16ul,  # the host's minute of the local day when it sent this
)

GroupValue = Struct(  # host -> pod, not acknowledged: the circle's shared value
    "group_id" / Int16ul,  # the circle the pod belongs to (informational)
    "value" / Int16ul,  # 0..65535, the effect "circle" follows it
)

SceneAt = Struct(  # host -> pod, command: apply a scene (its fields follow) at a pod instant (the shared timeline)
    # pod ticks_us (wraps at 2**30) at which the scene starts: it is applied on the
    # first frame rendered at or after it, and its animation time counts from it,
    # so pods given the same instant show the same phase. An instant already past
    # (up to 2**28 us) applies at once with the phase it would have had: a pod that
    # rejoins a running timeline catches up instead of starting over.
    "at_us" / Int32ul,
    *SCENE_FIELDS,
)

FramePhase = Struct(  # host -> pod, not acknowledged: align the render schedule
    # frames are rendered at anchor_us + k x period_us (pod ticks_us, wrapping); the
    # host re-sends it about once a second so the pod follows its drift estimate
    "anchor_us" / Int32ul,
    "period_us" / Int32ul,  # 0: keep the pod's own frame period
)

FadeSafe = Struct(  # host -> pod, command: a participant's stop
    # the strip fades to the safe glow within 2 s and holds it: SCENE_AT scenes are
    # acknowledged but not shown until a SCENE arrives (docs/light.md "Stop")
)

LedPreview = Struct(  # pod -> host, telemetry every LED_PREVIEW_MS: the strip as driven
    "led_count" / Int16ul,
    "segments" / Int8ul,  # 1..LED_PREVIEW_MAX_SEGMENTS
    # segments x (R, G, B): the mean of each segment's LEDs (sRGB bytes, after the governor)
    "rgb" / GreedyBytes,
)

SceneShown = Struct(  # pod -> host: the scene it shows, whenever that changes and in answer to CONNECT
    "source" / SceneSource,
    "state" / Int8ul,  # SHOWN_*
    *SCENE_FIELDS,
)

Ack = Struct(  # pod -> host
    "ack_seq" / Int16ul,  # seq of the command being acknowledged
)

Nack = Struct(  # pod -> host
    "ack_seq" / Int16ul,
    "reason" / NackReason,
    # empty (a pod that names no field; every pod before this tail existed) or a
    # NackDetail: a reader takes the first two fields whatever follows
    "detail" / GreedyBytes,
)

Log = Struct(  # pod -> host
    "level" / LogLevel,
    "text" / PascalString(Int8ul, "utf8"),
)

UpdateBegin = Struct(  # host -> pod, command: start (or resume) an update; the manifest follows as data
    "transfer" / Int16ul,  # the host's number for this transfer: the same one again resumes it
    "manifest_len" / Int16ul,  # bytes of the manifest (at most 8192)
    "total" / Int32ul,  # bytes of the payload: the slot files concatenated
    "tag" / GreedyBytes,  # HMAC-SHA256(update key, manifest), UPDATE_TAG_SIZE bytes
)

UpdateData = Struct(  # host -> pod, not acknowledged: a chunk of the manifest or of the payload
    "part" / Int8ul,  # UPDATE_PART_*
    "offset" / Int32ul,  # a multiple of UPDATE_BLOCK
    "crc" / Int32ul,  # CRC-32/IEEE of data
    "data" / GreedyBytes,  # at most UPDATE_CHUNK bytes
)

UpdateStatus = Struct(  # pod -> host, telemetry: after each update command, and every few chunks
    "transfer" / Int16ul,
    "state" / UpdateState,
    "reason" / UpdateReason,  # the store's last refusal (ok: none)
    "received" / Int32ul,  # bytes of the current part held (the payload's from state data on)
    "total" / Int32ul,  # bytes of the current part
    "next" / Int32ul,  # the first offset of the current part not yet held (total: all held)
)

UpdateCommit = Struct(  # host -> pod, command: verify every file, switch slots, then reset
    "transfer" / Int16ul,
    "confirm_ms" / Int32ul,  # how long the new build waits for UPDATE_CONFIRM before rolling back
)

UpdateConfirm = Struct(  # host -> pod, command: keep the build on trial
    "build_hash" / Int32ul,  # the build the host saw in HELLO: NACK bad_param if the pod runs another
)

# name, type id, definition, direction, acknowledged?
MESSAGES = (
    ("hello", 0x01, Hello),
    ("connect", 0x02, Connect),
    ("status", 0x03, Status),
    ("ping", 0x04, Ping),
    ("pong", 0x05, Pong),
    ("eeg_batch", 0x10, EegBatch),
    ("eeg_bands", 0x11, EegBands),
    ("power", 0x12, Power),
    ("leds", 0x13, LedPreview),
    ("scene_shown", 0x14, SceneShown),
    ("scene", 0x20, Scene),
    ("eeg_replay", 0x21, EegReplay),
    ("night_mode", 0x22, NightModeSet),
    ("group_value", 0x23, GroupValue),
    ("scene_at", 0x24, SceneAt),
    ("frame_phase", 0x25, FramePhase),
    ("safe_mode", 0x26, SafeMode),
    ("fade_safe", 0x27, FadeSafe),
    ("ack", 0x30, Ack),
    ("nack", 0x31, Nack),
    ("log", 0x40, Log),
    # 0x50-0x5F: the update messages (CORE)
    ("update_begin", 0x50, UpdateBegin),
    ("update_data", 0x51, UpdateData),
    ("update_status", 0x52, UpdateStatus),
    ("update_commit", 0x53, UpdateCommit),
    ("update_confirm", 0x54, UpdateConfirm),
)

# Messages whose layout may never change: a pod that differs in one of them is refused;
# any other message that differs is only unsupported with that pod. The update messages
# are core: a pod's updates must work with every later host. tests/test_compat.py holds
# each one to the layout hash recorded for it in protocol/known_schemas.json.
UPDATE_MESSAGES = frozenset({"update_begin", "update_data", "update_status", "update_commit", "update_confirm"})
CORE = frozenset({"hello", "connect", "ack", "nack"}) | UPDATE_MESSAGES

# What the pod sends; the host sends every other message. The pod's codec holds
# pack_ for these and unpack_ for the rest (protocol/gen_firmware.py).
POD_SENDS = frozenset({"hello", "status", "pong", "eeg_batch", "eeg_bands", "power", "leds", "scene_shown", "ack",
                       "nack", "log", "update_status"})

# Enums whose values the pod keeps as constants of its own instead of in its codec (every
# name in pod/wire.py is a global, in the pod's heap): the update states and reasons of
# firmware/pod/transfer.py, pod/update.py and pod/slots.py, generated there by protocol/gen_layout.py.
# The MicroPython tests that play the host find them in tests/firmware/peer_wire.py.
POD_OWN_ENUMS = frozenset({"update_state", "update_reason"})

# Messages the pod reads in place, without an unpack_ in its codec (firmware/pod/transfer.py)
POD_READS_RAW = frozenset({"update_data"})

# Commands the pod must answer with ACK or NACK.
COMMANDS = frozenset({"scene", "eeg_replay", "night_mode", "scene_at", "safe_mode", "fade_safe", "update_begin",
                      "update_commit", "update_confirm"})

# Runs of fields that several messages carry, each handled as one value (a record) by both
# ends: (name, fields). A message holds a record's fields in a row, the same objects.
RECORDS = (("scene", SCENE_FIELDS),)

# Largest item count of each PrefixedArray field, checked by both codecs: (message or
# record, field) -> count. A record's limit holds in every message that carries it.
LIST_LIMITS = {("scene", "params"): MAX_SCENE_PARAMS, ("eeg_bands", "powers"): 16 * 5}

# Bytes fields that hold a Struct of their own, or nothing: (message, field) -> Struct.
# The host codec builds an absent one empty, and checks a present one's length.
TAILS = {("nack", "detail"): NackDetail}

# Bytes fields that hold zero or more of a Struct back to back: (message, field) -> Struct.
# Absent, they are built empty; a present one must be a whole number of entries.
TAIL_RUNS = {("hello", "table"): HelloTableEntry}

ENUMS = (
    ("effect", Effect),
    ("nack_reason", NackReason),
    ("log_level", LogLevel),
    ("palette", Palette),
    ("night_mode", NightMode),
    ("scene_source", SceneSource),
    ("update_state", UpdateState),
    ("update_reason", UpdateReason),
)

# Scalar constants exported to the firmware.
CONSTANTS = (
    ("PROTOCOL_VERSION", PROTOCOL_VERSION),
    ("MAX_FRAME", MAX_FRAME),
    ("HEADER_SIZE", HEADER_SIZE),
    ("CRC_SIZE", CRC_SIZE),
    ("EEG_FLAG_GAP_BEFORE", EEG_FLAG_GAP_BEFORE),
    ("EEG_FLAG_REPLAY", EEG_FLAG_REPLAY),
    ("SCENE_FLAG_STROBE_OPT_IN", SCENE_FLAG_STROBE_OPT_IN),
    ("POWER_FLAG_TEMP_FAULT", POWER_FLAG_TEMP_FAULT),
    ("POWER_FLAG_THERMAL", POWER_FLAG_THERMAL),
    ("POWER_FLAG_HOT_OFF", POWER_FLAG_HOT_OFF),
    ("POWER_FLAG_UNDERVOLT", POWER_FLAG_UNDERVOLT),
    ("POWER_FLAG_VIN_CUTOFF", POWER_FLAG_VIN_CUTOFF),
    ("POWER_FLAG_VIN_FAULT", POWER_FLAG_VIN_FAULT),
    ("SAFE_MODE_CONFIRM", SAFE_MODE_CONFIRM),
    ("N_BANDS", 5),
    ("MAX_SCENE_PARAMS", MAX_SCENE_PARAMS),
    ("SHOWN_NIGHT", SHOWN_NIGHT),
    ("SHOWN_LINK_SAFE", SHOWN_LINK_SAFE),
    ("SHOWN_STOPPED", SHOWN_STOPPED),
    ("LED_PREVIEW_MAX_SEGMENTS", LED_PREVIEW_MAX_SEGMENTS),
    ("LED_PREVIEW_MS", LED_PREVIEW_MS),
    ("NACK_NO_FIELD", NACK_NO_FIELD),
    ("NACK_DETAIL_SIZE", NackDetail.sizeof()),
    ("UPDATE_PART_MANIFEST", UPDATE_PART_MANIFEST),
    ("UPDATE_PART_PAYLOAD", UPDATE_PART_PAYLOAD),
    ("UPDATE_BLOCK", UPDATE_BLOCK),
    ("UPDATE_CHUNK", UPDATE_CHUNK),
    ("UPDATE_TAG_SIZE", UPDATE_TAG_SIZE),
)
