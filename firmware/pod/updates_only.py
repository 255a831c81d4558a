"""Safe mode for updates (docs/update.md): after boots in a row that never ran, the
pod starts only its link and the update store: LEDs dark, no headset, no renderer.
A module of its own so that a pod running normally does not hold its code."""
import asyncio

import hal

from pod import config, link, safemode, wire
from pod.app import Pod, _boot_id, _rollback_log, _say_update_state, _updates


def _refuse_scene(_scene):
    return wire.NACK_REASON_UNAVAILABLE  # safe mode for updates: the LEDs stay dark


async def _feed(wdt):
    while True:
        wdt.feed()
        await asyncio.sleep_ms(wdt.timeout_ms // 4)


class UpdatesOnly(Pod):
    """Safe mode for updates, after boots in a row that never ran: LEDs dark, no
    headset, no renderer; the link and the update store only."""

    def __init__(self, cfg, slots_):
        self.cfg = cfg
        self.slots = slots_
        self.link = None

    async def run(self):
        cfg = self.cfg
        port = await hal.open_link(cfg)
        hello = (cfg.pod_id, config.FW_VERSION, _boot_id(), cfg.led_count, cfg.eeg_channels, cfg.sample_rate_hz)
        self.link = lk = link.Link(port, hello, _refuse_scene)
        self.safe_mode = safemode.SafeModeCommand()
        lk.register(wire.T_SAFE_MODE, self.safe_mode.request)
        _updates(lk, self.slots)
        lk.send_hello()
        lk.send_log(wire.LOG_LEVEL_ERROR, "safe mode for updates: %d boots in a row did not run"
                    % self.slots.failed_boots)
        _say_update_state(lk, self.slots)
        wdt = hal.Watchdog(cfg.watchdog_ms)
        await asyncio.gather(
            self._guard("update", self.slots.supervise(_rollback_log(lk))),
            self._guard("link rx", lk.rx_task()),
            self._guard("watchdog", _feed(wdt)),
        )
