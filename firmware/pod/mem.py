"""Byte copies that do not allocate (memoryview slices would)."""
import micropython


@micropython.viper
def copy(dst, d_off: int, src, s_off: int, n: int):
    """dst[d_off:d_off+n] = src[s_off:s_off+n], forward, so an overlap towards the start is safe."""
    d = ptr8(dst)
    s = ptr8(src)
    i = 0
    while i < n:
        d[d_off + i] = s[s_off + i]
        i += 1
