"""A fake ESP32 ROM serial bootloader: esptool's SLIP command set over a pty.

What a real ESP32 answers in download mode (BOOT held at reset), enough for
the real esptool to detect an ESP32, read its MAC, write a firmware image
into a file-backed SPI flash and verify it by MD5, all with ``--no-stub``
(the ROM loader itself, no flasher stub uploaded to RAM).

Packets are SLIP-framed (0xC0 ends, 0xDB 0xDC / 0xDB 0xDD escape 0xC0 / 0xDB).
A request is ``<BBHI`` (0x00, command, data length, checksum) + data; a reply
is ``<BBHI`` (0x01, command, data length, value) + data, where data ends
with the ESP32 ROM's four status bytes (status, error, 0, 0).

Commands served (ids as esptool names them):

============  ====  ==========================================================
SYNC          0x08  eight replies, as the ROM's autobaud answers
READ_REG      0x0A  chip magic, eFuses (MAC, package), UART divider, SPI regs
WRITE_REG     0x09  SPI user-command registers: RDID, RDSR, SFDP are executed
SPI_ATTACH    0x0D  accepted
SPI_SET_PARAMS 0x0B accepted (flash size noted)
CHANGE_BAUD   0x0F  accepted (a pty has no baud rate)
FLASH_BEGIN   0x02  erases the rounded-up region to 0xFF, as the ROM does
FLASH_DATA    0x03  checks the XOR checksum (seed 0xEF) and the sequence
FLASH_END     0x04  ``run user code`` (0 in the payload means reboot) calls
                    :attr:`FakeEspRom.on_run`: the board leaves download mode
FLASH_DEFL_*  0x10-0x12  the same with zlib-compressed blocks
SPI_FLASH_MD5 0x13  32 hex digits of the region's MD5
============  ====  ==========================================================

Anything else (GET_SECURITY_INFO 0x14, MEM_BEGIN 0x05 for a stub, ERASE_FLASH
0xD0 which only the stub has) gets the ROM's "invalid message" error (status
1, error 0x05), so esptool reports it as unsupported.
"""
from __future__ import annotations

import hashlib
import mmap
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

FLASH_SIZE = 4 * 1024 * 1024
SECTOR = 4096

ESP32_MAGIC = 0x00F01D83  # value esptool reads at CHIP_DETECT_MAGIC_REG_ADDR
ESP8266_MAGIC = 0xFFF0C101  # for a "wrong chip" board
_MAGIC_REG = 0x40001000
_EFUSE_BASE = 0x3FF5A000
_APB_CTL_DATE = 0x3FF6607C
_UART_CLKDIV = 0x3FF40014
_SPI_BASE = 0x3FF42000
_SPI_CMD = _SPI_BASE + 0x00
_SPI_USR2 = _SPI_BASE + 0x24
_SPI_W0 = _SPI_BASE + 0x80
_SPI_CMD_USR = 1 << 18
_XTAL_HZ = 40_000_000
# Winbond W25Q32: manufacturer 0xEF, device 0x4016 -> esptool's size id 0x16 = 4 MB
_FLASH_ID = 0x1640EF

SYNC, FLASH_BEGIN, FLASH_DATA, FLASH_END = 0x08, 0x02, 0x03, 0x04
READ_REG, WRITE_REG, SPI_SET_PARAMS, SPI_ATTACH, CHANGE_BAUD = 0x0A, 0x09, 0x0B, 0x0D, 0x0F
DEFL_BEGIN, DEFL_DATA, DEFL_END, FLASH_MD5 = 0x10, 0x11, 0x12, 0x13

_OK = b"\x00\x00\x00\x00"
_ERR_INVALID = b"\x01\x05\x00\x00"  # "received message is invalid": unsupported
_ERR_CHECKSUM = b"\x01\x07\x00\x00"
_ERR_BAD_DATA = b"\x01\x06\x00\x00"
_ERR_FLASH = b"\x01\x08\x00\x00"



def slip_encode(packet: bytes) -> bytes:
    return b"\xc0" + packet.replace(b"\xdb", b"\xdb\xdd").replace(b"\xc0", b"\xdb\xdc") + b"\xc0"


def xor_checksum(data: bytes, seed: int = 0xEF) -> int:
    for b in data:
        seed ^= b
    return seed


class FlashFile:
    """SPI NOR flash backed by a file: erased bytes are 0xFF, writes can only clear bits."""

    def __init__(self, path: str | os.PathLike, size: int = FLASH_SIZE):
        self.path = Path(path)
        self.size = size
        if not self.path.exists() or self.path.stat().st_size != size:
            self.path.write_bytes(b"\xff" * size)
        self._f = open(self.path, "r+b")
        self._map = mmap.mmap(self._f.fileno(), size)

    def read(self, offset: int, length: int) -> bytes:
        self._check(offset, length)
        return self._map[offset:offset + length]

    def erase(self, offset: int, length: int) -> None:
        start = offset - offset % SECTOR
        end = min(self.size, -(-(offset + length) // SECTOR) * SECTOR)
        self._check(start, end - start)
        self._map[start:end] = b"\xff" * (end - start)

    def write(self, offset: int, data: bytes) -> None:
        self._check(offset, len(data))
        old = self._map[offset:offset + len(data)]
        # NOR flash: programming clears bits, it never sets them
        anded = int.from_bytes(old, "big") & int.from_bytes(data, "big")
        self._map[offset:offset + len(data)] = anded.to_bytes(len(data), "big")

    def _check(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise ValueError(f"flash access {offset:#x}+{length:#x} outside {self.size:#x}")

    def flush(self) -> None:
        self._map.flush()

    def close(self) -> None:
        self._map.flush()
        self._map.close()
        self._f.close()


@dataclass
class RomCounters:
    packets: int = 0
    bytes_in: int = 0  # host -> ROM bytes, SLIP framing included
    bytes_out: int = 0
    bytes_written: int = 0  # bytes programmed into flash (after decompression)
    errors: int = 0  # requests answered with an error status
    unsupported: list[int] | None = None


class FakeEspRom:
    """The ROM loader as a byte-stream state machine: :meth:`feed` in, :meth:`take` out.

    ``mac`` is the board's 6-byte base MAC (stored in eFuse words 1 and 2 as
    the ESP32 does); ``magic`` the chip-detect value (an ESP8266's makes a
    "wrong chip" board). ``on_run`` is called after FLASH_END / FLASH_DEFL_END
    asks to run the flashed application.
    """

    def __init__(self, flash: FlashFile, mac: bytes, *, magic: int = ESP32_MAGIC,
                 on_run: Callable[[], None] | None = None):
        if len(mac) != 6:
            raise ValueError("mac must be 6 bytes")
        self.flash = flash
        self.mac = bytes(mac)
        self.magic = magic
        self.on_run = on_run
        self.counters = RomCounters(unsupported=[])
        self.baud = 115200
        self.flash_size = 0
        self._regs: dict[int, int] = {}
        self._rx = bytearray()
        self._in_frame = False
        self._out = bytearray()
        self._write: tuple[int, int, int] | None = None  # offset, block size, next seq
        self._defl: tuple[int, int, object] | None = None  # offset, next seq, decompressor
        self._defl_pos = 0

    # ---------------------------------------------------------------- stream
    def feed(self, data: bytes) -> None:
        self.counters.bytes_in += len(data)
        parts = bytes(data).split(b"\xc0")
        if self._in_frame:
            self._rx += parts[0]  # bytes before the first 0xC0 continue the current packet
        for part in parts[1:]:  # each 0xC0 ends a packet (if any) and starts the next
            if self._in_frame and self._rx:
                self._packet(self._unslip(bytes(self._rx)))
            self._rx.clear()
            self._in_frame = True
            self._rx += part

    def take(self) -> bytes:
        out, self._out = bytes(self._out), bytearray()
        self.counters.bytes_out += len(out)
        return out

    @staticmethod
    def _unslip(raw: bytes) -> bytes:
        return raw.replace(b"\xdb\xdc", b"\xc0").replace(b"\xdb\xdd", b"\xdb")

    def _reply(self, op: int, value: int = 0, data: bytes = _OK) -> None:
        if data[:1] != b"\x00":
            self.counters.errors += 1
        self._out += slip_encode(struct.pack("<BBHI", 1, op, len(data), value) + data)

    # -------------------------------------------------------------- commands
    def _packet(self, pkt: bytes) -> None:
        if len(pkt) < 8 or pkt[0] != 0:
            return  # not a request: the ROM ignores it
        _, op, size, chk = struct.unpack_from("<BBHI", pkt)
        data = pkt[8:8 + size]
        self.counters.packets += 1
        handler = self._HANDLERS.get(op)
        if handler is None:
            self.counters.unsupported.append(op)
            self._reply(op, 0, _ERR_INVALID)
            return
        handler(self, op, data, chk)

    def _sync(self, op, data, chk):
        if data != b"\x07\x07\x12\x20" + b"\x55" * 32:
            self._reply(op, 0, _ERR_BAD_DATA)
            return
        for _ in range(8):  # the ROM answers a SYNC eight times
            self._reply(op, 0x20120707)

    def read_reg(self, addr: int) -> int:
        if addr == _MAGIC_REG:
            return self.magic
        if _EFUSE_BASE <= addr < _EFUSE_BASE + 0x80:
            return self._efuse((addr - _EFUSE_BASE) // 4)
        if addr == _UART_CLKDIV:
            return _XTAL_HZ // self.baud  # esptool derives the 40 MHz crystal from it
        if addr == _APB_CTL_DATE:
            return 0
        return self._regs.get(addr, 0)

    def _efuse(self, word: int) -> int:
        m = self.mac
        if word == 1:
            return int.from_bytes(m[2:6], "big")
        if word == 2:
            return (m[0] << 8) | m[1]  # bits 16-23 hold a CRC that esptool does not read
        if word == 3:
            return 1 << 9  # package 1: ESP32-D0WD
        return 0

    def _read_reg(self, op, data, chk):
        if len(data) < 4:
            self._reply(op, 0, _ERR_BAD_DATA)
            return
        (addr,) = struct.unpack_from("<I", data)
        self._reply(op, self.read_reg(addr))

    def _write_reg(self, op, data, chk):
        if len(data) < 16 or len(data) % 16:
            self._reply(op, 0, _ERR_BAD_DATA)
            return
        for i in range(0, len(data), 16):
            addr, value, mask, _delay = struct.unpack_from("<IIII", data, i)
            old = self._regs.get(addr, 0)
            self._regs[addr] = (old & ~mask) | (value & mask)
            if addr == _SPI_CMD and value & _SPI_CMD_USR:
                self._spi_user_command()
        self._reply(op)

    def _spi_user_command(self) -> None:
        command = self._regs.get(_SPI_USR2, 0) & 0xFF
        result = {0x9F: _FLASH_ID}.get(command, 0)  # RDID; RDSR/SFDP read as 0
        self._regs[_SPI_W0] = result
        self._regs[_SPI_CMD] = self._regs.get(_SPI_CMD, 0) & ~_SPI_CMD_USR  # done at once

    def _accept(self, op, data, chk):
        self._reply(op)

    def _set_params(self, op, data, chk):
        if len(data) >= 8:
            self.flash_size = struct.unpack_from("<I", data, 4)[0]
        self._reply(op)

    def _change_baud(self, op, data, chk):
        if len(data) >= 4:
            self.baud = struct.unpack_from("<I", data)[0] or self.baud
        self._reply(op)

    def _begin(self, op, data, chk):
        if len(data) < 16:
            self._reply(op, 0, _ERR_BAD_DATA)
            return
        erase_size, _blocks, block_size, offset = struct.unpack_from("<IIII", data)
        try:
            if erase_size:
                self.flash.erase(offset, erase_size)
        except ValueError:
            self._reply(op, 0, _ERR_FLASH)
            return
        if op == FLASH_BEGIN:
            self._write, self._defl = (offset, block_size, 0), None
        else:
            self._defl, self._write = (offset, 0, zlib.decompressobj()), None
            self._defl_pos = offset
        self._reply(op)

    def _data(self, op, data, chk):
        if len(data) < 16:
            self._reply(op, 0, _ERR_BAD_DATA)
            return
        size, seq = struct.unpack_from("<II", data)
        block = data[16:16 + size]
        if len(block) != size or xor_checksum(block) != chk & 0xFF:
            self._reply(op, 0, _ERR_CHECKSUM)
            return
        try:
            if op == FLASH_DATA:
                if self._write is None or seq != self._write[2]:
                    self._reply(op, 0, _ERR_BAD_DATA)
                    return
                offset, block_size, _ = self._write
                self.flash.write(offset + seq * block_size, block)
                self._write = (offset, block_size, seq + 1)
                self.counters.bytes_written += len(block)
            else:
                if self._defl is None or seq != self._defl[1]:
                    self._reply(op, 0, _ERR_BAD_DATA)
                    return
                offset, _, dec = self._defl
                out = dec.decompress(block)
                self.flash.write(self._defl_pos, out)
                self._defl_pos += len(out)
                self._defl = (offset, seq + 1, dec)
                self.counters.bytes_written += len(out)
        except (ValueError, zlib.error):
            self._reply(op, 0, _ERR_FLASH)
            return
        self._reply(op)

    def _end(self, op, data, chk):
        self._write = self._defl = None
        self.flash.flush()
        self._reply(op)
        # 1 = run user code (esptool's soft reset), 0 = reboot; BOOT is no longer
        # held either way, so the chip leaves download mode and starts the app
        if self.on_run is not None and len(data) >= 4:
            self.on_run()

    def _md5(self, op, data, chk):
        if len(data) < 8:
            self._reply(op, 0, _ERR_BAD_DATA)
            return
        addr, size = struct.unpack_from("<II", data)
        try:
            digest = hashlib.md5(self.flash.read(addr, size)).hexdigest().encode()
        except ValueError:
            self._reply(op, 0, _ERR_FLASH)
            return
        self._reply(op, 0, digest + _OK)

    _HANDLERS = {
        SYNC: _sync,
        READ_REG: _read_reg,
        WRITE_REG: _write_reg,
        SPI_ATTACH: _accept,
        SPI_SET_PARAMS: _set_params,
        CHANGE_BAUD: _change_baud,
        FLASH_BEGIN: _begin,
        FLASH_DATA: _data,
        FLASH_END: _end,
        DEFL_BEGIN: _begin,
        DEFL_DATA: _data,
        DEFL_END: _end,
        FLASH_MD5: _md5,
    }



def make_image(size: int, seed: int = 0, payload: bytes | None = None) -> bytes:
    """A well-formed ESP32 application image of about ``size`` bytes, for tests and benchmarks.

    Built with esptool's own image writer (header 0xE9, extended header with
    chip id 0, checksum, SHA-256 digest), so esptool and the flash tool take
    it as an ESP32 image. ``payload`` fills a DRAM-mapped segment; by default
    it is deterministic pseudo-random bytes (which deflate cannot shrink).
    """
    import random

    from esptool.bin_image import ESP32FirmwareImage, ImageSegment

    if payload is None:
        payload = random.Random(seed).randbytes(max(16, size - 64))
    payload = payload + b"\x00" * (-len(payload) % 4)
    img = ESP32FirmwareImage()
    img.entrypoint = 0x40080000
    segment = ImageSegment(0x3FFB0000, payload)
    segment.name = ".dram0.data"
    img.segments = [segment]
    return img.save(None)
