"""The pod link's USB function, as pod.json's usb_link picks it: "cdc" a
CDC-ACM tty beside the REPL's (pod/usbcdc.py, hostd's serial transport),
"vendor" a vendor-class interface (pod/usbvendor.py, hostd's USB transport).
The S3 has IN endpoints for one of them beside the REPL (docs/transports.md).
open_link() puts BLE beside it when pod.json enables it: hal.open_link's one
home, for the board's HAL and the emulator's."""


def open(usbd, cfg):
    """The pod link's Port on usbd (a machine.USBDevice)."""
    if cfg is not None and cfg.usb_link == "vendor":
        from pod import usbvendor

        return usbvendor.open(usbd, cfg)
    from pod import usbcdc

    return usbcdc.open(usbd, cfg)


def open_link(usbd, cfg, bluetooth):
    """The pod link: the USB function's Port alone, or with BLE on (cfg.ble) a pod/ports.Ports
    in front of it and the BLE port (one transport at a time). bluetooth() gives the
    bluetooth module (the HAL's: only hal.py imports hardware)."""
    usb = open(usbd, cfg)
    if cfg is None or not cfg.ble:
        return usb  # one transport: no layer in front of it (its ~2.5 KB stay out of the heap)
    from pod import ble, ports

    return ports.Ports([usb, ble.open(bluetooth(), cfg, usb)])  # one pair of rings: one carries the link
