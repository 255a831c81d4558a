"""machine.USBDevice and the link port as the pod benches drive them under the 32-bit unix
port (pod_cpu_paths.py, preview_paths.py): the firmware's own usbcdc.Port runs on a stand-in
device whose transfers complete through micropython.schedule, as TinyUSB's callbacks do."""
import micropython

from pod.mem import copy as _copy


class _BuiltinCDC:
    # what usbcdc.Port reads of machine.USBDevice.BUILTIN_CDC
    itf_max = 2
    ep_max = 3
    str_max = 4
    desc_dev = bytes(18)
    desc_cfg = bytes(9)


class StandInUSBDevice:
    """machine.USBDevice as usbcdc.Port uses it: IN transfers are counted and completed
    through micropython.schedule (as TinyUSB's callbacks reach the interpreter);
    deliver(frame) completes a pending OUT transfer with the frame's bytes."""

    BUILTIN_CDC = _BuiltinCDC()

    def __init__(self):
        self.builtin_driver = None
        self.tx_bytes = 0
        self.tx_xfers = 0
        self._out_buf = None
        self._done_in_cb = self._done_in

    def active(self, v=None):
        return True

    def config(self, desc_dev, desc_cfg, strs, open_cb, reset_cb, control_cb, xfer_cb):
        self._open_cb = open_cb
        self._xfer_cb = xfer_cb

    def open(self):
        self._open_cb(bytes((9, 4, self.BUILTIN_CDC.itf_max)))  # SET_CONFIGURATION: our interface

    def submit_xfer(self, ep, buf):
        if ep & 0x80:
            n = len(buf)
            self.tx_bytes += n
            self.tx_xfers += 1
            self._ep_in = ep
            micropython.schedule(self._done_in_cb, n)
        else:
            self._ep_out = ep
            self._out_buf = buf
        return True

    def _done_in(self, n):
        self._xfer_cb(self._ep_in, 0, n)

    def deliver(self, frame):
        n = len(frame)
        _copy(self._out_buf, 0, frame, 0, n)
        self._xfer_cb(self._ep_out, 0, n)


class BenchPort:
    """The real usbcdc.Port's methods, except wait(): a generator that yields once, as
    the port's ThreadSafeFlag.wait() does until bytes arrive (the asyncio loop's resume
    is the "asyncio wakeup" row): the one rx_task coroutine runs one pass per send(None)."""

    def __init__(self, port):
        self.port = port
        self.readinto = port.readinto
        self.write = port.write
        self.tx_free = port.tx_free

    def wait(self):
        return self._wait()

    def _wait(self):
        yield
