# Awaiting without allocating (pod/flagwait.py): a stream's next bytes.
import gc
import os
import socket
import struct

import asyncio
from pod.flagwait import StreamRead


def _pair(name):
    addr = struct.pack("H", socket.AF_UNIX) + name.encode() + b"\0"  # the unix port wants a sockaddr_un
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        os.remove(name)
    except OSError:
        pass
    srv.bind(addr)
    srv.listen(1)
    cli = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    cli.connect(addr)
    peer, _ = srv.accept()
    srv.close()
    os.remove(name)
    cli.setblocking(False)
    return cli, peer


async def _per_read(cli, peer, read_once):
    # bytes allocated per read of 10 bytes, over 100 reads (after one to warm up)
    msg = b"0123456789"
    peer.send(msg)
    assert await read_once() == 10
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    got = 0
    for i in range(100):
        peer.send(msg)
        got += await read_once()
    used = gc.mem_alloc() - before
    gc.enable()
    assert got == 1000, got
    return used / 100


async def test_stream_read_gives_what_arrived_without_a_coroutine_per_read():
    cli, peer = _pair("flagwait-test.sock")
    try:
        buf = bytearray(64)
        stream = asyncio.StreamReader(cli)
        read = StreamRead(stream, buf)

        async def with_stream_read():
            await read.wait()
            return read.n

        async def with_readinto():
            return await stream.readinto(buf)

        ours = await _per_read(cli, peer, with_stream_read)
        assert buf[:10] == b"0123456789"
        theirs = await _per_read(cli, peer, with_readinto)
        # what is left is asyncio's own poll entry per wait (extmod/asyncio/core.py, IOQueue._enqueue)
        assert ours < theirs, (ours, theirs)
        peer.close()
        await read.wait()
        assert read.n == 0  # the peer went away: the stream has ended
    finally:
        cli.close()
