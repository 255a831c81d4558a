"""Finding a pod's REPL from its link's port (host/repl_port.py), against sysfs trees laid out
as Linux shows a USB CDC-ACM device: ``class/tty/<tty>/device`` -> the interface directory
(``bInterfaceNumber``), whose parent is the USB device (``idVendor``, ``idProduct``, ``serial``)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from hypnolum.host import repl_port

USB = "devices/pci0000:00/0000:00:14.0/usb1/1-2"


def _device(sys_root: Path, vid: str, pid: str, serial: str | None, ttys: dict[int, str]) -> Path:
    """A USB device at 1-2 with a tty on each interface number of ``ttys``."""
    usb = sys_root / USB
    usb.mkdir(parents=True, exist_ok=True)
    (usb / "idVendor").write_text(vid + "\n")
    (usb / "idProduct").write_text(pid + "\n")
    if serial is not None:
        (usb / "serial").write_text(serial + "\n")
    for number, tty in ttys.items():
        iface = usb / f"1-2:1.{number}"
        (iface / "tty" / tty).mkdir(parents=True)
        (iface / "bInterfaceNumber").write_text(f"{number:02x}\n")
        entry = sys_root / "class" / "tty" / tty
        entry.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(iface, entry), entry / "device")
    return usb


def _port(tmp_path: Path, tty: str, name: str = "pod-X") -> str:
    """The stable name hostd opens (udev's symlink) for /dev/<tty>, here under tmp_path/dev."""
    dev = tmp_path / "dev"
    (dev / "hypnolum").mkdir(parents=True, exist_ok=True)
    (dev / tty).touch()
    link = dev / "hypnolum" / name
    link.symlink_to(dev / tty)
    return str(link)


def test_a_native_usb_pods_repl_is_interface_0_of_its_device_found_again_after_the_reset(tmp_path):
    sys_root = tmp_path / "sys"
    usb = _device(sys_root, "303a", "4001", "F412FA6B", {0: "ttyACM0", 2: "ttyACM1"})
    link = _port(tmp_path, "ttyACM1", "pod-F412FA6B")
    repl = repl_port.locate(link, sys_root)
    assert (repl.same_port, repl.usb_device, repl.serial) == (False, Path(os.path.realpath(usb)), "F412FA6B")
    assert repl_port.find(repl, sys_root) == "/dev/ttyACM0"
    assert not repl_port.link_gone(repl, "ttyACM1", sys_root)
    # safe mode: the device enumerates again with the REPL alone, on another tty
    for tty in ("ttyACM0", "ttyACM1"):
        (sys_root / "class" / "tty" / tty / "device").unlink()
        (sys_root / "class" / "tty" / tty).rmdir()
    for number in (0, 2):
        for p in sorted((usb / f"1-2:1.{number}").rglob("*"), reverse=True):
            p.rmdir() if p.is_dir() else p.unlink()
        (usb / f"1-2:1.{number}").rmdir()
    assert repl_port.link_gone(repl, "ttyACM1", sys_root)
    assert repl_port.find(repl, sys_root) is None  # not back yet
    _device(sys_root, "303a", "4001", "F412FA6B", {0: "ttyACM3"})
    assert repl_port.find(repl, sys_root) == "/dev/ttyACM3"
    (usb / "serial").write_text("0THERB0ARD\n")  # another board plugged into that USB port
    assert repl_port.find(repl, sys_root) is None


def test_a_uart_bridge_or_a_pty_carries_the_repl_on_the_links_port(tmp_path):
    sys_root = tmp_path / "sys"
    _device(sys_root, "10c4", "ea60", "0001", {0: "ttyUSB0"})  # CP210x: UART0 is the REPL
    link = _port(tmp_path, "ttyUSB0")
    repl = repl_port.locate(link, sys_root)
    assert repl.same_port and repl_port.find(repl, sys_root) == link
    pty = _port(tmp_path, "7", "emulated")  # /dev/pts/7: no sysfs entry at all
    assert repl_port.locate(pty, sys_root).same_port


@pytest.mark.parametrize("serial, ttys, why", [
    ("F412FA6B", {2: "ttyACM1"}, "USB device 1-2 (serial F412FA6B) shows no REPL tty (interface 0)"),
    (None, {0: "ttyACM0", 2: "ttyACM1"}, "USB device 1-2 reports no serial number"),
])
def test_a_native_usb_pod_without_a_findable_repl_is_named(tmp_path, serial, ttys, why):
    sys_root = tmp_path / "sys"
    _device(sys_root, "303a", "4001", serial, ttys)
    link = _port(tmp_path, "ttyACM1")
    with pytest.raises(repl_port.NoRepl) as exc:
        repl_port.locate(link, sys_root)
    assert str(exc.value).startswith(f"{link}: the pod's {why}"), str(exc.value)


def test_the_flash_tool_finds_the_pod_link_beside_the_repl_and_waits_for_it(tmp_path):
    # the S3's native USB: the REPL on interface 0; the pod's link (interface 2) appears only
    # once the app runs after the reset, perhaps with the REPL's tty renamed
    usb = _device(tmp_path, "303a", "4001", "F412FA6C0001", {0: "ttyACM0"})
    find = repl_port.link_finder(_port(tmp_path, "ttyACM0", "repl"), tmp_path)
    assert find() is None  # the app has not opened its link yet
    iface = usb / "1-2:1.2"
    (iface / "tty" / "ttyACM3").mkdir(parents=True)
    (iface / "bInterfaceNumber").write_text("02\n")
    assert find() == "/dev/ttyACM3"
    (usb / "serial").write_text("OTHERBOARD\n")  # another board plugged into that USB port
    assert find() is None


def test_the_link_is_the_port_itself_on_a_bridge_a_pty_or_when_given_the_link(tmp_path):
    _device(tmp_path, "10c4", "ea60", "0001", {0: "ttyUSB0"})  # a CP210x bridge: UART0 carries both
    bridge = _port(tmp_path, "ttyUSB0", "bridge")
    assert repl_port.link_finder(bridge, tmp_path)() == bridge
    pty = str(tmp_path / "emu" / "pod-01.tty")
    assert repl_port.link_finder(pty, tmp_path)() == pty
    other = tmp_path / "other"
    _device(other, "303a", "4001", "F412FA6C0002", {0: "ttyACM0", 2: "ttyACM1"})
    link = _port(other, "ttyACM1", "link")
    assert repl_port.link_finder(link, other)() == link  # --verify-only given the link's own port


def test_after_the_rom_loader_the_link_is_the_cdc_tty_or_the_vendor_interface_in_that_usb_port(tmp_path, monkeypatch):
    # the flash tool meets a blank board in the ROM loader (303a:1001, its MAC as serial number);
    # MicroPython comes back in the same USB port with another identity
    monkeypatch.setenv(repl_port.SYSFS_ROOT_ENV, str(tmp_path))  # the one setting: no argument given below
    usb = _device(tmp_path, "303a", "1001", "7C:DF:A1:10:01:66", {0: "ttyACM0"})
    find = repl_port.link_finder(_port(tmp_path, "ttyACM0", "board"))
    assert find() is None  # still the ROM loader
    # the app's vendor link (usb_link "vendor"): 303a:4021 named by the pod id, no link tty
    (usb / "idProduct").write_text("4021\n")
    (usb / "serial").write_text("pod-v1\n")
    assert find() == repl_port.UsbLink(0x303A, 0x4021, "pod-v1", "1-2")
    # or its CDC link: interface 2's tty, at the path under /dev its uevent names (a pty here)
    (usb / "idProduct").write_text("4001\n")
    (usb / "serial").write_text("7cdfa1100166\n")
    assert find() is None  # the app has not opened its link yet
    tty = usb / "1-2:1.2" / "tty" / "9"
    tty.mkdir(parents=True)
    (usb / "1-2:1.2" / "bInterfaceNumber").write_text("02\n")
    (tty / "uevent").write_text("MAJOR=136\nMINOR=9\nDEVNAME=pts/9\n")
    assert find() == "/dev/pts/9"


def test_sysfs_is_read_from_the_setting_at_each_call(tmp_path, monkeypatch):
    _device(tmp_path / "sys", "303a", "4001", "F412FA6B", {0: "ttyACM0", 2: "ttyACM1"})
    link = _port(tmp_path, "ttyACM1")
    monkeypatch.delenv(repl_port.SYSFS_ROOT_ENV, raising=False)
    assert repl_port.sysfs_root() == Path("/sys")
    monkeypatch.setenv(repl_port.SYSFS_ROOT_ENV, str(tmp_path / "sys"))
    assert repl_port.find(repl_port.locate(link)) == "/dev/ttyACM0"
