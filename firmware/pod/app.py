"""The pod application: wires config, HAL, link, headset, renderer and heartbeat.

Boot order matters: the LEDs go dark first (a reset must not leave the last
frame lit), the link says HELLO as soon as it is open, and the watchdog
starts only once everything is running, fed by the render loop alone.
A task that dies is reported over the link and the pod resets, as a hung
task would otherwise go unnoticed while the renderer keeps feeding the watchdog.
"""
import asyncio
import gc
import os
import struct

import hal
from micropython import const

from pod import alpha, bands, config, cyton, derate, link, preview, render, ring, safemode, slots, status, wire

_RESET_DELAY_MS = const(200)  # let the LOG frame leave before resetting


def _boot_id():
    return struct.unpack("<I", os.urandom(4))[0]


class Pod:
    def __init__(self, cfg, slots_):
        self.cfg = cfg
        self.slots = slots_  # the A/B slots (pod/slots.py); .store() is the update store
        self.leds = hal.Leds(cfg.led_count, cfg.led_order, cfg.led_type)
        self.renderer = render.Renderer(self.leds, cfg.render_fps, cfg)
        self.renderer.render(hal.ticks_ms())  # dark at once
        self.link = None
        self.headset = None
        self.heartbeat = None

    async def _guard(self, name, coro):
        try:
            await coro
        except Exception as e:  # noqa: any failure of a task means restart, after saying why
            if self.link is not None:
                self.link.send_log(wire.LOG_LEVEL_ERROR, name + " failed: " + repr(e))
                await asyncio.sleep_ms(_RESET_DELAY_MS)
            hal.reset()

    async def run(self):
        cfg = self.cfg
        self.port = port = await hal.open_link(cfg)
        hello = (cfg.pod_id, config.FW_VERSION, _boot_id(), cfg.led_count, cfg.eeg_channels, cfg.sample_rate_hz)
        self.link = lk = link.Link(port, hello, self.renderer.apply)
        several = hasattr(port, "on_switch")  # a pod/ports.Ports: more than one transport
        if several:
            port.on_switch = lk.start_over  # another transport took the link over: HELLO there
        self.renderer.watch(lk, cfg.fade_after_ms)
        lk.register(wire.T_NIGHT_MODE, self.renderer.night)
        lk.register(wire.T_GROUP_VALUE, self.renderer.group, command=False)
        lk.register(wire.T_SCENE_AT, self.renderer.scene_at)
        lk.register(wire.T_FRAME_PHASE, self.renderer.frame_phase, command=False)
        self.safe_mode = safemode.SafeModeCommand()
        lk.register(wire.T_SAFE_MODE, self.safe_mode.request)
        _updates(lk, self.slots)  # updates over the link (docs/update.md)
        # the governor's current cap from heat, supply and the per-output limit (POWER telemetry)
        self.derate = derate.Derate(self.renderer.governor, cfg, lk)
        self.headset = hs = cyton.Headset(lk, cfg.eeg_channels, cfg.headset_baud, cfg.sample_rate_hz,
                                                cfg.eeg_batch_ms)
        # EEG store and forward, and band powers read from the same ring
        rate = cfg.sample_rate_hz  # per channel (125 Hz with the Daisy)
        hs.ring = samples = ring.SampleRing(cfg.eeg_channels, rate)
        self.replayer = ring.Replayer(lk, samples)
        lk.register(wire.T_EEG_REPLAY, self.replayer.request)  # answered before the replay starts
        self.bands = bands.BandPower(samples, rate, hs.parser.take_masks, lk, hs.gain)  # EEG_BANDS telemetry
        # alpha_bloom follows the wearer's alpha, updated with every sample as the parser takes it in
        self.alpha = None
        alpha_error = None
        try:
            self.alpha = hs.parser.tap = alpha.Tracker(cfg.eeg_channels, rate, self.renderer.inputs, hs.gain)
        except ValueError as e:  # a sample rate it cannot track: alpha_bloom stays dark
            alpha_error = str(e)
        self.heartbeat = status.Heartbeat(lk, self.headset, self.renderer)
        # LEDS telemetry: the strip as driven, for the host's live view (the lowest priority)
        self.preview = preview.Preview(lk, self.renderer.governor.shown, cfg.led_count)
        lk.send_hello()
        for err in cfg.errors:
            lk.send_log(wire.LOG_LEVEL_WARNING, "config: " + err)
        for err in getattr(port, "problems", ()):
            lk.send_log(wire.LOG_LEVEL_WARNING, "link: " + err)
        if alpha_error:
            lk.send_log(wire.LOG_LEVEL_WARNING, alpha_error)
        _say_update_state(lk, self.slots)
        wdt = hal.Watchdog(cfg.watchdog_ms)
        tasks = [self._guard("link ports", port.run())] if several else []
        await asyncio.gather(
            *tasks,
            self._guard("update", self.slots.supervise(_rollback_log(lk))),
            self._guard("link rx", lk.rx_task()),
            self._guard("render", self.renderer.run(wdt)),
            self._guard("headset", self.headset.run()),
            self._guard("replay", self.replayer.run()),
            self._guard("bands", self.bands.run()),
            self._guard("status", self.heartbeat.run()),
            self._guard("derate", self.derate.run()),
            self._guard("preview", self.preview.run()),
        )


_UPDATE_TYPES = (wire.T_UPDATE_BEGIN, wire.T_UPDATE_DATA, wire.T_UPDATE_COMMIT, wire.T_UPDATE_CONFIRM)


def _updates(lk, sl):
    """Route the update messages to pod/transfer.py, imported with the first one: its code
    stays out of the heap until an update begins, as the store's does."""
    def first(seq, frame, end):
        from pod import transfer

        transfer.Transfer(lk, sl)  # registers its handlers in place of this one
        lk.dispatch(seq, frame, end)

    for t in _UPDATE_TYPES:
        lk.register_raw(t, first)


def _say_update_state(lk, sl):
    if sl.rolled_back:
        lk.send_log(wire.LOG_LEVEL_WARNING, "update: the build on trial was not confirmed; rolled back")
    if sl.trial:
        lk.send_log(wire.LOG_LEVEL_INFO, "update: build on trial, awaiting confirmation")


def _rollback_log(lk):
    def say():
        lk.send_log(wire.LOG_LEVEL_WARNING, "update: not confirmed in time; rolling back")
    return say


def main():
    # The render loop collects, at its quiet moment (pod/render.py); the heap's
    # allocation threshold stays off (-1), as it counts call frames freed on return.
    # A full heap still collects at once, whoever allocates.
    gc.collect()
    gc.threshold(-1)
    sl = slots.Slots()
    cfg = config.load()
    config.release_schema()
    gc.collect()
    if sl.safe:
        from pod import updates_only  # its code only in safe mode for updates

        asyncio.run(updates_only.UpdatesOnly(cfg, sl).run())
    else:
        asyncio.run(Pod(cfg, sl).run())
