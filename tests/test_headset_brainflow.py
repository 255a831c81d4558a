"""BrainFlow, a third-party Cyton reader, streams from the virtual headset's pty.

BrainFlow's CYTON_BOARD does the whole real handshake ('v' ... '$$$', 'd'),
'b'/'s', and scales counts to µV itself; it must read the microvolts the
emulator put on the wire, before and after a gain change it sends through
config_board (BrainFlow tracks the gain from the command, as with a board).
"""
from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from brainflow.board_shim import BoardIds, BoardShim, BrainFlowInputParams

from hypnolum.emulator.headset import HeadsetPty

BOARD = BoardIds.CYTON_BOARD.value


def _align(bf_counter: np.ndarray, bf_uv: np.ndarray, sent: list) -> tuple[np.ndarray, np.ndarray]:
    """BrainFlow's rows matched to the packets the emulator sent (by counter, then by value)."""
    counters = np.array([c for c, _ in sent])
    uv = np.array([u for _, u in sent])
    best = None
    for start in np.nonzero(counters == bf_counter[0])[0]:
        n = min(len(bf_counter), len(sent) - start)
        if n < 50 or not (counters[start : start + n] == bf_counter[:n]).all():
            continue
        err = np.abs(uv[start : start + n] - bf_uv[:n]).max()
        if best is None or err < best[0]:
            best = (err, start, n)
    assert best is not None, "BrainFlow's packet counters match no run of sent packets"
    _, start, n = best
    return bf_uv[:n], uv[start : start + n]


def _session(path: str):
    BoardShim.disable_board_logger()
    params = BrainFlowInputParams()
    params.serial_port = path
    board = BoardShim(BOARD, params)
    board.prepare_session()
    try:
        board.start_stream()
        time.sleep(1.5)
        first = board.get_board_data()
        board.config_board("x1030110X")  # channel 1: gain 6 (code 3), normal input, bias, SRB2
        time.sleep(0.3)
        board.get_board_data()  # the packets in flight around the change
        time.sleep(1.5)
        second = board.get_board_data()
        board.stop_stream()
    finally:
        board.release_session()
    return first, second


@pytest.mark.timeout(60)
async def test_brainflow_reads_the_right_microvolts_also_after_a_gain_change(tmp_path):
    hp = HeadsetPty(tmp_path / "headset.tty", seed=11, record=5000)
    hp.open()
    try:
        first, second = await asyncio.to_thread(_session, str(tmp_path / "headset.tty"))
    finally:
        await hp.close()
    eeg = BoardShim.get_eeg_channels(BOARD)
    pkg = BoardShim.get_package_num_channel(BOARD)
    sent = list(hp.cyton.sent)
    assert hp.cyton.channels[0].gain == 6  # the command reached the board
    for data in (first, second):
        assert data.shape[1] > 200, data.shape  # > 0.8 s of samples at 250 Hz
        bf, ours = _align(data[pkg].astype(int), data[eeg].T, sent)
        # to within half a count of the coarsest scale in use (gain 6: 0.089 µV per count)
        assert np.abs(bf - ours).max() < 0.05, np.abs(bf - ours).max()
        assert np.abs(ours).max() > 5  # a real signal, not zeros
    # after the change channel 1 is sampled at gain 6: counts are 4x coarser, µV the same size
    bf2, ours2 = _align(second[pkg].astype(int), second[eeg].T, sent)
    steps = np.diff(np.unique(np.round(ours2[:, 0] / (4.5 / (2**23 - 1) / 6 * 1e6))))
    assert len(steps) and (steps >= 1).all()
    assert 1 < np.std(bf2[:, 0]) < 200


def test_emulate_cli_headset_pty_streams_to_brainflow(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    proc = subprocess.Popen(
        [sys.executable, "-m", "hypnolum", "emulate", "--pods", "1", "--headset-pty", "--dir", str(tmp_path / "emu")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        line = proc.stdout.readline().split()
        assert len(line) == 3 and line[0] == "pod-01", (line, proc.stderr.read() if proc.poll() else "")
        headset_path = line[2]
        assert Path(headset_path).is_symlink() and os.path.realpath(headset_path).startswith("/dev/pts/")
        BoardShim.disable_board_logger()
        params = BrainFlowInputParams()
        params.serial_port = headset_path
        board = BoardShim(BOARD, params)
        board.prepare_session()
        try:
            board.start_stream()
            time.sleep(1.5)
            data = board.get_board_data()
            board.stop_stream()
        finally:
            board.release_session()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(15)
        finally:
            proc.kill()
    assert rc == 0
    assert data.shape[1] > 250
    counters = data[BoardShim.get_package_num_channel(BOARD)].astype(int)
    assert (np.diff(counters) % 256 == 1).mean() > 0.99  # a continuous stream
    eeg = data[BoardShim.get_eeg_channels(BOARD)]
    assert 1 < np.abs(eeg).max() < 2000  # microvolts of EEG
    assert not os.path.lexists(headset_path)  # removed on exit


@pytest.mark.timeout(60)
async def test_brainflow_cyton_daisy_reads_16_channels(tmp_path):
    """CYTON_DAISY_BOARD pairs an even packet (channels 9-16) with the odd one after it (1-8)."""
    board_id = BoardIds.CYTON_DAISY_BOARD.value

    def session(path):
        BoardShim.disable_board_logger()
        params = BrainFlowInputParams()
        params.serial_port = path
        board = BoardShim(board_id, params)
        board.prepare_session()
        try:
            board.start_stream()
            time.sleep(1.5)
            data = board.get_board_data()
            board.stop_stream()
        finally:
            board.release_session()
        return data

    hp = HeadsetPty(tmp_path / "headset.tty", seed=12, daisy=True, record=5000)
    hp.open()
    try:
        data = await asyncio.to_thread(session, str(tmp_path / "headset.tty"))
    finally:
        await hp.close()
    eeg = data[BoardShim.get_eeg_channels(board_id)].T
    assert eeg.shape[1] == 16 and len(eeg) > 150  # 125 Hz
    sent = list(hp.cyton.sent)
    pairs = [(c_even, np.concatenate([odd, even]))
             for (c_even, even), (c_odd, odd) in zip(sent, sent[1:]) if c_even % 2 == 0 and c_odd == c_even + 1]
    counters = np.array([c for c, _ in pairs])
    uv = np.array([u for _, u in pairs])
    bf_counter = data[BoardShim.get_package_num_channel(board_id)].astype(int)
    start = int(np.nonzero(counters == bf_counter[0])[0][0])
    n = min(len(eeg), len(pairs) - start)
    assert (counters[start : start + n] == bf_counter[:n]).all()
    assert np.abs(uv[start : start + n] - eeg[:n]).max() < 0.02
