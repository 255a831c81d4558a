"""What can go wrong at the bench, each with a message that says what and where."""
from __future__ import annotations


class FlashError(Exception):
    """A board could not be flashed, provisioned or verified. ``step`` names the stage."""

    kind = "error"

    def __init__(self, message: str, step: str = ""):
        super().__init__(message)
        self.step = step


class NoBoard(FlashError):
    kind = "no-board"


class PortBusy(FlashError):
    kind = "port-busy"


class WrongChip(FlashError):
    kind = "wrong-chip"


class MissingImage(FlashError):
    kind = "missing-image"


class BadConfig(FlashError):
    kind = "bad-config"


class UploadFailed(FlashError):
    kind = "upload-failed"


class VerifyMismatch(FlashError):
    kind = "verify-mismatch"


class NoAnswer(FlashError):
    kind = "no-answer"


class NoUsb(FlashError):
    """The pod's link is its USB vendor interface, and pyusb or libusb-1.0 is missing."""

    kind = "no-usb"
