"""The flash tool verifying a pod whose link is its USB vendor interface (pod.json usb_link
"vendor"), end to end on real parts: esptool, mpremote, the real firmware on an emulated board.

The board (emulator/board.py) presents the S3's native USB as the host sees it: the REPL's
tty, and once the app runs the device 303a:4021 with the pod id as serial number in its sysfs
tree (HYPNOLUM_SYSFS_ROOT) and no link tty. The firmware's own USB device is on its usb.sock;
tests/helpers/fake_usb.py is the libusb layer under pyusb, given to the flash job as its pyusb
backend, as hostd's tests give it to hostd.
"""
from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest
from helpers.fake_usb import UsbBus

from hypnolum import paths
from hypnolum.emulator import esp_rom
from hypnolum.emulator.board import EmulatedBoard
from hypnolum.flash import bundle, flashlog
from hypnolum.flash.boards import Board
from hypnolum.flash.image import flash_image, load_image
from hypnolum.flash.job import Options, run_board
from hypnolum.host import repl_port
from hypnolum.host.transport.usb import UsbTransport, find_devices

pytestmark = [pytest.mark.micropython, pytest.mark.timeout(150)]
VID, PID = 0x303A, 0x4021  # firmware/pod/usbvendor.py


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "ESP32_GENERIC_S3-SPIRAM_OCT-20260101-v1.28.0.bin"
    path.write_bytes(esp_rom.make_image(60_000, seed=2))
    return path


async def test_a_vendor_link_pod_is_verified_on_its_usb_interface_and_one_held_by_hostd_is_named(
        tmp_path, monkeypatch, image):
    monkeypatch.setenv("HYPNOLUM_SYSFS_ROOT", str(tmp_path / "sys"))
    app = bundle.build(paths.FIRMWARE, "x86")
    board = EmulatedBoard("board-1", tmp_path, seed=1)
    await board.start(download=True)
    bus = UsbBus(board.dir)  # the board's firmware presents its device on fs/usb.sock
    log = tmp_path / "flash-log.jsonl"
    opts = Options(bundle=app, settings={"pod_id": "pod-v1", "usb_link": "vendor", "led_count": 9}, image=None,
                   boot_timeout_s=30, log_path=log, update_keys_dir=tmp_path / "update-keys",
                   usb_backend=bus.backend())
    target = Board(str(board.port), "given")
    try:
        # MicroPython first, and the REPL up before the job opens it: the board's REPL is a child
        # of this process, and one forked while esptool's thread still held the port would hold
        # its lock until exec (the tool itself runs apart from the board, tests/test_flash_e2e.py)
        await asyncio.to_thread(flash_image, str(board.port), load_image(image), before="no-reset",
                                after="soft-reset", stub=False)
        await board.wait_mode("repl")
        out = await asyncio.to_thread(run_board, target, opts)
        assert out.ok, (out.step, out.error)
        assert (out.hello["pod_id"], out.hello["build_hash"], out.hello["led_count"]) == ("pod-v1", app.build_hash, 9)
        # the S3 as the host sees it: the REPL's tty only, the device 303a:4021 named by the pod id
        assert board.mode == "firmware" and board.link_port is None
        usb = board.usb.device
        ids = [(usb / f).read_text().strip() for f in ("idVendor", "idProduct", "serial")]
        assert ids == ["303a", "4021", "pod-v1"]
        assert repl_port.link_finder(str(board.port))() == repl_port.UsbLink(VID, PID, "pod-v1", usb.name)
        dev = bus.devices["fs"]
        assert not dev.claims  # verify let the interface go

        # hostd serving the pod holds its interface: verify says so, and writes nothing
        (held,) = await asyncio.to_thread(find_devices, VID, PID, "pod-v1", bus.backend())
        hostd = UsbTransport(held, reset_on_open=False)
        await hostd.open()
        check = dataclasses.replace(opts, image=None, upload=False, boot_timeout_s=5)
        try:
            busy = await asyncio.to_thread(run_board, target, check)
        finally:
            await hostd.close()
        assert (busy.ok, busy.step, busy.kind) == (False, "verify", "port-busy"), busy
        assert "the pod's link interface is claimed by another program: hostd serving this pod?" in busy.error
        assert flashlog.read(log)[-1]["kind"] == "port-busy"
        # let go: verify-only passes on the untouched pod
        again = await asyncio.to_thread(run_board, target, check)
        assert again.ok and again.hello["pod_id"] == "pod-v1", again
    finally:
        bus.close()
        await board.stop()
