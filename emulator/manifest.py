# The emulated board's frozen modules, built into the 32-bit interpreter by
# tools/build_micropython.sh. asyncio is frozen, as the ESP32 image has it. The
# shim modules below stand in for C code of the board's image (the time module,
# the RTOS tick and machine.Timer; machine.USBDevice and TinyUSB behind it; the
# bluetooth module and NimBLE behind it): frozen, their bytecode
# stays out of the heap as the board's C code does, so an emulated pod's
# mem_free counts what the firmware itself holds (docs/emulator.md, "Heap").
# emulator/image.py reads the module() lines below: keep one module per line.
include("$(MPY_DIR)/extmod/asyncio")
module("emutime.py", base_path="mpy")
module("machine.py", base_path="mpy")
module("usbcable.py", base_path="mpy")
module("bluetooth.py", base_path="mpy")
