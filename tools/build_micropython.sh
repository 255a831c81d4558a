#!/usr/bin/env bash
# Build the MicroPython v1.28.0 unix port 32-bit (the board's word size: 31-bit
# small ints, 32-bit viper words, 16-byte GC blocks) and mpy-cross of the same
# tag, and install both into a bin directory.
#
# Usage: tools/build_micropython.sh BIN_DIR
# Source: ../shared/micropython/micropython-1.28.0-src.tar.gz beside the
# checkout when it exists, else a shallow clone of the upstream tag.
# Needs gcc-multilib; as root it installs it, otherwise it says how.
set -euo pipefail

TAG=v1.28.0
BIN=$(realpath -m "${1:?usage: $0 BIN_DIR}")
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=$ROOT/../shared/micropython
WORK=${MICROPYTHON_BUILD_DIR:-$ROOT/.build/micropython-$TAG}

need_multilib() {
    # a 32-bit libc to link against: gcc -m32 must build a program
    echo 'int main(void){return 0;}' | gcc -m32 -x c -o /dev/null - 2>/dev/null
}
if ! need_multilib; then
    if [ "$(id -u)" = 0 ]; then
        echo "installing gcc-multilib (Debian package) for the 32-bit MicroPython build"
        apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q gcc-multilib make
    fi
    need_multilib || {
        echo "the 32-bit MicroPython build needs gcc-multilib; run:  sudo apt-get update && sudo apt-get install -y gcc-multilib" >&2
        exit 1
    }
fi

if [ ! -x "$WORK/mpy-cross/build/mpy-cross" ] || [ ! -f "$WORK/ports/unix/Makefile" ]; then
    rm -rf "$WORK"
    mkdir -p "$WORK"
    if [ -f "$SHARED/micropython-1.28.0-src.tar.gz" ]; then
        tar xzf "$SHARED/micropython-1.28.0-src.tar.gz" -C "$WORK"
    else
        git clone -q --depth 1 --branch "$TAG" https://github.com/micropython/micropython "$WORK" || {
            echo "no MicroPython source: put micropython-1.28.0-src.tar.gz in $SHARED or allow the clone of $TAG" >&2
            exit 1
        }
    fi
    mkdir -p "$WORK/.empty-lib" && touch "$WORK/.empty-lib/README.md"  # stands in for the micropython-lib submodule
    # the version string comes from the tag, not from a git repository around the build
    export GIT_CEILING_DIRECTORIES=$(dirname "$WORK")
    # mpy-cross first, without the port's variables (FROZEN_MANIFEST breaks its link)
    make -s -C "$WORK/mpy-cross" -j"$(nproc)" >"$WORK/.mpy-cross.log" 2>&1 || { tail -20 "$WORK/.mpy-cross.log" >&2; exit 1; }
fi

# The unix port, with this checkout's frozen modules (emulator/manifest.py):
# make rebuilds only what changed, so this runs on every set-up. One build at a
# time in a build directory that several checkouts may share.
export GIT_CEILING_DIRECTORIES=$(dirname "$WORK")
exec 9>"$WORK/.lock"
flock 9
echo "include(\"$ROOT/emulator/manifest.py\")" > "$WORK/.manifest.py"
make -s -C "$WORK/ports/unix" -j"$(nproc)" MICROPY_FORCE_32BIT=1 \
    MICROPY_PY_BTREE=0 MICROPY_PY_FFI=0 MICROPY_PY_SSL=0 \
    FROZEN_MANIFEST="$WORK/.manifest.py" MPY_LIB_DIR="$WORK/.empty-lib" >"$WORK/.unix.log" 2>&1 \
    || { tail -20 "$WORK/.unix.log" >&2; exit 1; }

mkdir -p "$BIN"
install -m 0755 "$WORK/ports/unix/build-standard/micropython" "$BIN/micropython"
install -m 0755 "$WORK/mpy-cross/build/mpy-cross" "$BIN/mpy-cross"
# what was frozen, for the emulator to tell a stale interpreter (emulator/image.py)
# (image.frozen_digest: the manifest, then each frozen shim module's name, a NUL and its bytes)
MANIFEST=$ROOT/emulator/manifest.py
{
    cat "$MANIFEST"
    sed -n 's/^module("\([^"]*\)", base_path="\([^"]*\)")$/\2 \1/p' "$MANIFEST" | while read -r base name; do
        printf '%s\0' "$name"
        cat "$ROOT/emulator/$base/$name"
    done
} | sha256sum | cut -c1-16 > "$BIN/micropython.frozen"
flock -u 9

# The checks: this exact version, 32-bit words.
"$BIN/micropython" -X heapsize=256k -c '
import sys
v = sys.implementation.version
assert v[:3] == (1, 28, 0), v
assert sys.maxsize == 2**31 - 1, sys.maxsize
print("micropython", sys.version, "32-bit unix port, maxsize", sys.maxsize)'
"$BIN/mpy-cross" --version
