"""Finding pod boards: USB serial ports whose VID:PID is an ESP32-S3's native USB or a known USB-UART.

A pod board (ESP32-S3) shows up as one of three Espressif devices: the ROM's
USB-Serial/JTAG in download mode, MicroPython's TinyUSB CDC while it runs
(v1.28.0 ports/esp32/mpconfigport.h: VID 0x303A, PID 0x4000 | CDC), or, with
the pod firmware's vendor link (pod.json usb_link "vendor"), that CDC beside a
vendor interface (PID 0x4021, firmware/pod/usbvendor.py). The tty is the REPL's.
The USB-UART bridges are for development boards that reach UART0 through one.
The table is data: add a bridge here and discovery picks it up.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import serial
from serial.tools import list_ports
from serial.tools.list_ports_common import ListPortInfo

from hypnolum.host.transport.usb import INTERFACE_NAME as LINK_INTERFACE_NAME

from .errors import NoBoard, PortBusy

# (vid, pid) -> what sits on the board
USB_BRIDGES: dict[tuple[int, int], str] = {
    (0x10C4, 0xEA60): "Silicon Labs CP210x",
    (0x1A86, 0x7523): "WCH CH340",
    (0x1A86, 0x55D4): "WCH CH9102",
    (0x0403, 0x6001): "FTDI FT232R",
    (0x0403, 0x6015): "FTDI FT231X",
    (0x303A, 0x1001): "ESP32-S3 USB-Serial/JTAG (ROM loader)",
    (0x303A, 0x4001): "ESP32-S3 USB CDC (MicroPython)",
    (0x303A, 0x4021): "ESP32-S3 USB CDC + vendor link (pod firmware, usb_link \"vendor\")",
}


@dataclass(frozen=True)
class Board:
    port: str
    bridge: str  # what USB_BRIDGES says, or "given" for --port
    serial_number: str = ""
    location: str = ""


def is_pod_port(info: ListPortInfo) -> bool:
    """A known VID:PID, and not the pod link's own tty (a native-USB pod's interface 2, which
    sits beside its REPL's in the same device): the board is reached on its REPL."""
    return (info.vid, info.pid) in USB_BRIDGES and info.interface != LINK_INTERFACE_NAME


def from_port_infos(infos: list[ListPortInfo]) -> list[Board]:
    """The pod boards among pyserial's port descriptions, sorted by device path."""
    boards = [
        Board(info.device, USB_BRIDGES[(info.vid, info.pid)], info.serial_number or "", info.location or "")
        for info in infos
        if is_pod_port(info)
    ]
    return sorted(boards, key=lambda b: b.port)


def discover() -> list[Board]:
    """Every attached board with a known VID:PID; raises NoBoard if there is none."""
    boards = from_port_infos(list(list_ports.comports()))
    if not boards:
        known = ", ".join(f"{v:04x}:{p:04x} {name}" for (v, p), name in USB_BRIDGES.items())
        raise NoBoard(f"no board found: no USB serial port with a known VID:PID ({known}); "
                      "check the cable and hub, or give --port", step="discover")
    return boards


def given(ports: list[str]) -> list[Board]:
    """Boards on explicit ports; a path that does not exist is a clear error."""
    out = []
    for port in ports:
        if not os.path.exists(port):
            raise NoBoard(f"{port}: no such port (is the board plugged in?)", step="discover")
        out.append(Board(port, "given"))
    return out


def check_free(port: str) -> None:
    """Raise PortBusy if another program holds the port (hostd, a serial monitor, ...)."""
    try:
        s = serial.Serial(port, 115200, exclusive=True, timeout=0)
    except serial.SerialException as exc:
        text = str(exc)
        if "exclusively lock" in text or "Resource temporarily unavailable" in text or "busy" in text.lower():
            raise PortBusy(f"{port}: port busy: another program has it open "
                           "(stop hostd or the serial monitor on it)", step="open") from None
        raise NoBoard(f"{port}: cannot open: {text}", step="open") from None
    s.close()
