"""The fake ESP32-S3 ROM loader against the real esptool, and the emulated board's REPL against the real mpremote."""
from __future__ import annotations

import asyncio
import struct
import sys

import pytest

from hypnolum.emulator import esp_rom
from hypnolum.emulator.board import EmulatedBoard

ESPTOOL = [sys.executable, "-m", "esptool", "--before", "no-reset", "--after", "no-reset", "--no-stub"]


async def _run(*cmd: str, timeout: float = 60) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode, out.decode(errors="replace")


@pytest.fixture
async def board(tmp_path):
    b = EmulatedBoard("b1", tmp_path, mac=bytes.fromhex("246f28a1b2c3"))
    await b.start(download=True)
    yield b
    await b.stop()


async def test_esptool_detects_esp32s3_and_reads_mac(board):
    """esptool's own detection: GET_SECURITY_INFO answers chip id 9, so no magic-value fallback."""
    rc, out = await _run(*ESPTOOL, "-p", str(board.port), "read-mac")
    assert rc == 0, out
    assert "Detecting chip type... ESP32-S3" in out
    assert "Chip type:          ESP32-S3 (QFN56) (revision v0.2)" in out
    assert "Embedded PSRAM 8MB (AP_3v3)" in out  # the N16R8's in-package octal PSRAM
    assert "MAC:                24:6f:28:a1:b2:c3" in out
    assert esp_rom.GET_SECURITY_INFO not in board.rom.counters.unsupported
    # the S3 path never reads the ESP32's chip-magic register or its eFuse block
    assert board.rom.counters.errors == 0


async def test_esptool_with_chip_esp32s3_accepts_the_board(board):
    """`-c esp32s3` cross-checks the chip id the ROM reports."""
    rc, out = await _run(*ESPTOOL, "-c", "esp32s3", "-p", str(board.port), "flash-id")
    assert rc == 0, out
    assert "Detected flash size: 16MB" in out


@pytest.mark.parametrize("compress", ["--compress", "--no-compress"])
async def test_esptool_writes_and_verifies_the_image(board, tmp_path, compress):
    image = esp_rom.make_image(70_000, seed=3)
    path = tmp_path / "fw.bin"
    path.write_bytes(image)
    # an ESP32-S3 image starts at 0x0 (its second-stage bootloader), not at the ESP32's 0x1000
    rc, out = await _run(*ESPTOOL, "-p", str(board.port), "write-flash", compress, "0x0", str(path))
    assert rc == 0, out
    assert "Hash of data verified." in out
    assert board.flash.read(0x0, len(image)) == image
    assert board.flash.read(len(image), 16) == b"\xff" * 16
    assert board.has_image()
    rc, out = await _run(*ESPTOOL, "-p", str(board.port), "verify-flash", "0x0", str(path))
    assert rc == 0 and "Verification successful (digest matched)" in out, out
    # a different file must fail the same MD5 check
    path.write_bytes(image[:-1] + bytes([image[-1] ^ 1]))
    rc, out = await _run(*ESPTOOL, "-p", str(board.port), "verify-flash", "0x0", str(path))
    assert rc != 0 and "digest mismatch" in out.lower(), out


async def test_an_image_at_the_esp32_offset_does_not_boot(board, tmp_path):
    """Written at 0x1000 (where an ESP32 image goes) the S3 finds no bootloader at 0x0."""
    path = tmp_path / "fw.bin"
    path.write_bytes(esp_rom.make_image(4000, seed=5))
    rc, out = await _run(*ESPTOOL, "-p", str(board.port), "write-flash", "0x1000", str(path))
    assert rc == 0, out
    assert not board.has_image()
    await board.reset()
    assert board.mode == "no-image"


@pytest.mark.parametrize("chip, name", [("esp32", "ESP32"), ("esp8266", "ESP8266")])
async def test_wrong_chip_is_reported_by_esptool(tmp_path, chip, name):
    b = EmulatedBoard("odd", tmp_path, chip=chip)
    await b.start(download=True)
    try:
        rc, out = await _run(*ESPTOOL, "-p", str(b.port), "read-mac")
        assert f"Detecting chip type... {name}\n" in out or f"Detecting chip type... {name}\r" in out, out
        # an ESP32 ROM has no GET_SECURITY_INFO: esptool falls back to the chip-magic register
        assert esp_rom.GET_SECURITY_INFO in b.rom.counters.unsupported
        rc, out = await _run(*ESPTOOL, "-c", "esp32s3", "-p", str(b.port), "read-mac")
        assert rc != 0 and f"This chip is {name}, not ESP32-S3" in out, out
    finally:
        await b.stop()


def test_security_info_reply_carries_the_s3_chip_id(tmp_path):
    flash = esp_rom.FlashFile(tmp_path / "flash.bin")
    rom = esp_rom.FakeEspRom(flash, bytes(6))
    rom.feed(esp_rom.slip_encode(struct.pack("<BBHI", 0, esp_rom.GET_SECURITY_INFO, 0, 0)))
    reply = rom.take()[1:-1]
    _, op, size, _ = struct.unpack_from("<BBHI", reply)
    flags, crypt, *purposes, chip_id, api = struct.unpack_from("<IBBBBBBBBII", reply, 8)
    assert (op, size, flags, chip_id) == (esp_rom.GET_SECURITY_INFO, 24, 0, 9)
    assert reply[8 + 20:8 + 24] == b"\x00" * 4  # status OK
    flash.close()


def test_rom_refuses_a_block_with_a_bad_checksum(tmp_path):
    flash = esp_rom.FlashFile(tmp_path / "flash.bin")
    rom = esp_rom.FakeEspRom(flash, bytes(6))

    def request(op: int, data: bytes, chk: int = 0) -> bytes:
        rom.feed(esp_rom.slip_encode(struct.pack("<BBHI", 0, op, len(data), chk) + data))
        return rom.take()

    assert request(esp_rom.FLASH_BEGIN, struct.pack("<IIII", 4096, 1, 1024, 0x1000)).endswith(b"\x00" * 4 + b"\xc0")
    block = bytes(range(256)) * 4
    bad = request(esp_rom.FLASH_DATA, struct.pack("<IIII", len(block), 0, 0, 0) + block, chk=0x00)
    assert bad[-5:-1] == b"\x01\x07\x00\x00"  # checksum error status
    good = request(esp_rom.FLASH_DATA, struct.pack("<IIII", len(block), 0, 0, 0) + block,
                   chk=esp_rom.xor_checksum(block))
    assert good[-5:-1] == b"\x00\x00\x00\x00"
    assert flash.read(0x1000, len(block)) == block
    assert rom.counters.errors == 1
    flash.close()


async def test_mpremote_uses_the_emulated_repl(tmp_path):
    """The real mpremote CLI: exec, fs cp, soft reset (the board restarts its REPL without main.py)."""
    b = EmulatedBoard("r1", tmp_path, mac=bytes.fromhex("246f28000001"))
    await b.start(download=True)
    b.flash.write(0x0, esp_rom.make_image(1000))  # an image, so reset leaves the ROM
    await b.reset()
    assert b.mode == "repl"
    src = tmp_path / "hello.txt"
    src.write_bytes(b"written through the raw REPL\n")
    mpremote = [sys.executable, "-m", "mpremote", "connect", str(b.port)]
    try:
        rc, out = await _run(*mpremote, "exec", "import machine,binascii; print(binascii.hexlify(machine.unique_id()))")
        assert rc == 0 and "246f28000001" in out, out
        rc, out = await _run(*mpremote, "fs", "cp", str(src), ":hello.txt", "+", "fs", "ls")
        assert rc == 0 and "hello.txt" in out, out
        assert (b.fs_dir / "hello.txt").read_bytes() == src.read_bytes()
        rc, out = await _run(*mpremote, "soft-reset", "+", "exec", "print(6*7)")
        assert rc == 0 and "42" in out, out
        assert b.counters.soft_reboots >= 1 and b.mode == "repl"
    finally:
        await b.stop()
