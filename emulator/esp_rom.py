"""A fake ESP32-S3 ROM serial bootloader: esptool's SLIP command set over a pty.

What a real ESP32-S3 answers in download mode (BOOT held at reset, or
``machine.bootloader()``), enough for the real esptool to detect an
ESP32-S3, read its MAC, write a firmware image into a file-backed 16 MB SPI
flash (the -N16R8 module's) and verify it by MD5, all with ``--no-stub``
(the ROM loader itself, no flasher stub uploaded to RAM). The older ESP32
and the ESP8266 are kept as "wrong chip" boards.

Packets are SLIP-framed (0xC0 ends, 0xDB 0xDC / 0xDB 0xDD escape 0xC0 / 0xDB).
A request is ``<BBHI`` (0x00, command, data length, checksum) + data; a reply
is ``<BBHI`` (0x01, command, data length, value) + data, where data ends
with the ROM's four status bytes (status, error, 0, 0).

How esptool 5 tells the chips apart (``esptool.cmds.detect_chip``): it first
sends GET_SECURITY_INFO. An ESP32-S3 ROM answers with 20 bytes whose
``chip_id`` word is 9 (``ESP32S3ROM.IMAGE_CHIP_ID``, the same id an S3 image
carries in its header); an ESP32 ROM answers "invalid message", and esptool
falls back to reading the chip-detect magic at 0x40001000 (0x00F01D83 for an
ESP32, 0xFFF0C101 for an ESP8266). The registers esptool then reads differ
per chip, so each chip here is a :class:`Chip` profile: eFuse base and MAC
words (S3: 0x60007044/0x60007048, BLOCK1), the SPI controller that runs the
flash-id command (S3: SPI1 at 0x60002000, USR2 at +0x20, W0 at +0x58), and
the UART clock divider the ESP32 derives its crystal from.

Commands served (ids as esptool names them):

=================  ====  =====================================================
SYNC               0x08  eight replies, as the ROM's autobaud answers
GET_SECURITY_INFO  0x14  ESP32-S3 only: flags 0, chip id 9
READ_REG           0x0A  chip magic, eFuses (MAC, package, revision), SPI regs
WRITE_REG          0x09  SPI user-command registers: RDID, RDSR, SFDP are executed
SPI_ATTACH         0x0D  accepted
SPI_SET_PARAMS     0x0B  accepted (flash size noted)
CHANGE_BAUD        0x0F  accepted (a pty has no baud rate)
FLASH_BEGIN        0x02  erases the rounded-up region to 0xFF, as the ROM does
FLASH_DATA         0x03  checks the XOR checksum (seed 0xEF) and the sequence
FLASH_END          0x04  ``run user code`` (0 in the payload means reboot) calls
                         :attr:`FakeEspRom.on_run`: the board leaves download mode
FLASH_DEFL_*       0x10-0x12  the same with zlib-compressed blocks
SPI_FLASH_MD5      0x13  32 hex digits of the region's MD5
=================  ====  =====================================================

Anything else (GET_SECURITY_INFO on an ESP32, MEM_BEGIN 0x05 for a stub,
ERASE_FLASH 0xD0 which only the stub has) gets the ROM's "invalid message"
error (status 1, error 0x05), so esptool reports it as unsupported.
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

FLASH_SIZE = 16 * 1024 * 1024  # ESP32-S3-WROOM-1-N16R8: 16 MB quad SPI flash
SECTOR = 4096

ESP32S3_CHIP_ID = 9  # GET_SECURITY_INFO chip_id; also the chip id in an S3 image header
ESP32_MAGIC = 0x00F01D83  # value esptool reads at CHIP_DETECT_MAGIC_REG_ADDR (ESP32, ESP8266 only)
ESP8266_MAGIC = 0xFFF0C101
_MAGIC_REG = 0x40001000
_SPI_CMD_USR = 1 << 18
_XTAL_HZ = 40_000_000


@dataclass(frozen=True)
class Chip:
    """What one chip's ROM answers where esptool looks (esptool/targets/<chip>.py)."""

    name: str
    magic: int  # at 0x40001000
    chip_id: int | None  # GET_SECURITY_INFO's chip id; None: the ROM lacks the command
    efuse_base: int
    mac_word: int  # eFuse word (from efuse_base) holding MAC bytes 2-5; the next word holds bytes 0-1
    spi_base: int  # SPI controller that talks to the flash
    spi_usr2: int  # offset of SPI_USR2 (the command byte)
    spi_w0: int  # offset of SPI_W0 (the data read back)
    uart_clkdiv: int | None  # UART0 clock divider (the ESP32 derives its crystal from it)
    flash_id: int  # JEDEC id the RDID command returns


# ESP32-S3 (esptool/targets/esp32s3.py): EFUSE_BASE 0x60007000, MAC_EFUSE_REG
# = EFUSE_BASE + 0x44 (BLOCK1 words 0 and 1), SPI_REG_BASE 0x60002000 with
# USR2 at +0x20 and W0 at +0x58; the crystal is fixed at 40 MHz.
# Winbond W25Q128JV: 0xEF 0x4018 -> esptool's size id 0x18 = 16 MB.
ESP32S3 = Chip("esp32s3", magic=0x00000009, chip_id=ESP32S3_CHIP_ID, efuse_base=0x60007000, mac_word=0x44 // 4,
               spi_base=0x60002000, spi_usr2=0x20, spi_w0=0x58, uart_clkdiv=None, flash_id=0x1840EF)
# ESP32 (esptool/targets/esp32.py): eFuses at 0x3FF5A000, MAC in words 1-2,
# SPI at 0x3FF42000 (USR2 +0x24, W0 +0x80), crystal from UART_CLKDIV 0x3FF40014.
ESP32 = Chip("esp32", magic=ESP32_MAGIC, chip_id=None, efuse_base=0x3FF5A000, mac_word=1,
             spi_base=0x3FF42000, spi_usr2=0x24, spi_w0=0x80, uart_clkdiv=0x3FF40014, flash_id=0x1640EF)
ESP8266 = Chip("esp8266", magic=ESP8266_MAGIC, chip_id=None, efuse_base=0x3FF00050, mac_word=1,
               spi_base=0x60000200, spi_usr2=0x24, spi_w0=0x40, uart_clkdiv=None, flash_id=0x1640EF)
CHIPS = {c.name: c for c in (ESP32S3, ESP32, ESP8266)}

SYNC, FLASH_BEGIN, FLASH_DATA, FLASH_END = 0x08, 0x02, 0x03, 0x04
READ_REG, WRITE_REG, SPI_SET_PARAMS, SPI_ATTACH, CHANGE_BAUD = 0x0A, 0x09, 0x0B, 0x0D, 0x0F
DEFL_BEGIN, DEFL_DATA, DEFL_END, FLASH_MD5, GET_SECURITY_INFO = 0x10, 0x11, 0x12, 0x13, 0x14

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

    ``mac`` is the board's 6-byte base MAC (in the chip's MAC eFuse words);
    ``chip`` the ROM's :class:`Chip` (ESP32-S3 by default; an ESP32 or
    ESP8266 makes a "wrong chip" board). ``on_run`` is called after
    FLASH_END / FLASH_DEFL_END asks to run the flashed application.
    """

    def __init__(self, flash: FlashFile, mac: bytes, *, chip: Chip = ESP32S3,
                 on_run: Callable[[], None] | None = None):
        if len(mac) != 6:
            raise ValueError("mac must be 6 bytes")
        self.flash = flash
        self.mac = bytes(mac)
        self.chip = chip
        self.magic = chip.magic
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

    def _security_info(self, op, data, chk):
        if self.chip.chip_id is None:  # the ESP32's ROM has no such command
            self.counters.unsupported.append(op)
            self._reply(op, 0, _ERR_INVALID)
            return
        # flags (no secure boot / download mode), flash_crypt_cnt, 7 key purposes, chip id, eco version
        info = struct.pack("<IBBBBBBBBII", 0, 0, 0, 0, 0, 0, 0, 0, 0, self.chip.chip_id, 0)
        self._reply(op, 0, info + _OK)

    def read_reg(self, addr: int) -> int:
        chip = self.chip
        if addr == _MAGIC_REG:
            return self.magic
        if chip.efuse_base <= addr < chip.efuse_base + 0x100:
            return self._efuse((addr - chip.efuse_base) // 4)
        if chip.uart_clkdiv is not None and addr == chip.uart_clkdiv:
            return _XTAL_HZ // self.baud  # esptool derives the 40 MHz crystal from it
        return self._regs.get(addr, 0)

    def _efuse(self, word: int) -> int:
        m, chip = self.mac, self.chip
        if word == chip.mac_word:
            return int.from_bytes(m[2:6], "big")
        if word == chip.mac_word + 1:
            return (m[0] << 8) | m[1]  # the bits above hold a CRC / pad config esptool does not read here
        if chip is ESP32S3:
            block1 = word - chip.mac_word  # esptool reads BLOCK1 word n at EFUSE_BASE + 0x44 + 4n
            if block1 == 3:
                return 2 << 18  # pkg 0 (QFN56), minor revision 2: "ESP32-S3 (QFN56) (revision v0.2)"
            if block1 == 4:
                return (1 << 3) | (1 << 7)  # in-package PSRAM: 8 MB (psram_cap 1), vendor AP_3v3
            return 0
        if chip is ESP32 and word == 3:
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
            if addr == self.chip.spi_base and value & _SPI_CMD_USR:
                self._spi_user_command()
        self._reply(op)

    def _spi_user_command(self) -> None:
        base = self.chip.spi_base
        command = self._regs.get(base + self.chip.spi_usr2, 0) & 0xFF
        result = {0x9F: self.chip.flash_id}.get(command, 0)  # RDID; RDSR/SFDP read as 0
        self._regs[base + self.chip.spi_w0] = result
        self._regs[base] = self._regs.get(base, 0) & ~_SPI_CMD_USR  # SPI_CMD: done at once

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
        GET_SECURITY_INFO: _security_info,
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



def make_image(size: int, seed: int = 0, payload: bytes | None = None, chip: str = "esp32s3") -> bytes:
    """A well-formed application image of about ``size`` bytes, for tests and benchmarks.

    Built with esptool's own image writer (header 0xE9, extended header with
    the chip id: 9 for an ESP32-S3, 0 for an ESP32; checksum, SHA-256
    digest), so esptool and the flash tool take it as an image for that chip.
    ``payload`` fills a DRAM-mapped segment; by default it is deterministic
    pseudo-random bytes (which deflate cannot shrink).
    """
    import random

    from esptool.bin_image import ESP32FirmwareImage, ESP32S3FirmwareImage, ImageSegment

    if payload is None:
        payload = random.Random(seed).randbytes(max(16, size - 64))
    payload = payload + b"\x00" * (-len(payload) % 4)
    if chip == "esp32s3":
        img, entry, dram = ESP32S3FirmwareImage(), 0x40375000, 0x3FC88000
    elif chip == "esp32":
        img, entry, dram = ESP32FirmwareImage(), 0x40080000, 0x3FFB0000
    else:
        raise ValueError(f"no image format for {chip!r}")
    img.entrypoint = entry
    segment = ImageSegment(dram, payload)
    segment.name = ".dram0.data"
    img.segments = [segment]
    return img.save(None)
