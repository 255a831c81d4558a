"""The pod link's USB function, as pod.json's usb_link picks it: "cdc" a
CDC-ACM tty beside the REPL's (pod/usbcdc.py, hostd's serial transport),
"vendor" a vendor-class interface (pod/usbvendor.py, hostd's USB transport).
The S3 has IN endpoints for one of them beside the REPL (docs/transports.md)."""


def open(usbd, cfg):
    """The pod link's Port on usbd (a machine.USBDevice)."""
    if cfg is not None and cfg.usb_link == "vendor":
        from pod import usbvendor

        return usbvendor.open(usbd, cfg)
    from pod import usbcdc

    return usbcdc.open(usbd, cfg)
