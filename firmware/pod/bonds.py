"""The BLE stack's secrets (bonds), kept in a file on the pod's flash.

MicroPython's bluetooth module leaves storing them to the application
(_IRQ_GET_SECRET / _IRQ_SET_SECRET, docs/library/bluetooth.rst at v1.28.0):
each is (sec_type, key, value), all opaque bytes to the pod. They live in
ble_bonds.bin as records [sec_type u8][key length u8][value length u16 LE]
[key][value], rewritten whole (atomically, hal.write_file) when one changes:
pairing is rare. At most MAX secrets; a new one beyond that is refused.
"""
import hal
from micropython import const

FILE = "ble_bonds.bin"
MAX = const(24)  # a few bonded hosts: NimBLE stores our keys, the peer's and its CCCDs per bond


class Bonds:
    def __init__(self):
        self._items = []  # [sec_type, key bytes, value bytes]
        self.errors = 0  # saves that failed
        self.problem = None  # what was wrong with the file at boot, for the link's LOG
        data = hal.read_file(FILE)
        if data:
            self._parse(data)

    def _parse(self, data):
        i = 0
        while i + 4 <= len(data):
            t, kl = data[i], data[i + 1]
            vl = data[i + 2] | data[i + 3] << 8
            j = i + 4 + kl
            if j + vl > len(data):
                self.problem = "%s: record %d at byte %d is cut short; the %d before it are kept" % (
                    FILE, len(self._items) + 1, i, len(self._items))
                return
            self._items.append([t, bytes(data[i + 4:j]), bytes(data[j:j + vl])])
            i = j + vl
        if i != len(data):
            self.problem = "%s: %d bytes after the last record are not one; the %d records are kept" % (
                FILE, len(data) - i, len(self._items))

    def _find(self, sec_type, key):
        for it in self._items:
            if it[0] == sec_type and it[1] == key:
                return it
        return None

    def has(self, sec_type, key):
        return self._find(sec_type, bytes(key)) is not None

    def get(self, sec_type, index, key):
        """The value for (sec_type, key), or with key None the index'th of sec_type; None if absent."""
        if key is not None:
            it = self._find(sec_type, bytes(key))
            return it[2] if it is not None else None
        for it in self._items:
            if it[0] == sec_type:
                if not index:
                    return it[2]
                index -= 1
        return None

    def set(self, sec_type, key, value):
        """Store (value None: delete) and save; False if full or the file could not be written."""
        key = bytes(key)
        it = self._find(sec_type, key)
        if value is None:
            if it is None:
                return True
            self._items.remove(it)
        elif it is not None:
            it[2] = bytes(value)
        elif len(self._items) >= MAX:
            return False
        else:
            self._items.append([sec_type, key, bytes(value)])
        return self._save()

    def __len__(self):
        return len(self._items)

    def _save(self):
        out = bytearray()
        for t, k, v in self._items:
            out += bytes((t, len(k), len(v) & 0xFF, len(v) >> 8))
            out += k
            out += v
        try:
            hal.write_file(FILE, out)
        except OSError:
            self.errors += 1
            return False
        return True
