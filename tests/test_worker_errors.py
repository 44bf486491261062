"""Errors raised inside DataLoader workers reach the user as their original one-line message, the
full traceback only in the log file; missing frame files are reported when the loader is built."""
import argparse
import contextlib
import logging

import numpy as np
import pytest
import torch
from detectron2.data import transforms as T
from detectron2.utils.logger import setup_logger
from PIL import Image

from iai_d2.data import check_frame_files
from iai_d2.data.clip_mapper import VideoFrames
from iai_d2.engine import console_without_tracebacks, error_message, launch_or_exit

pytestmark = pytest.mark.usefixtures("one_torch_thread")

H, W = 16, 24


def _video_with_missing_frame(root):
    """3 frame paths of video id 1; frame 2 was never written."""
    names = [str(root / f"{t:05d}.jpg") for t in range(3)]
    for name in names[:2]:
        Image.fromarray(np.full((H, W, 3), 90, dtype=np.uint8)).save(name)
    return names


def _iterate_with_a_worker(names):
    frames = VideoFrames(names, video_id=1, height=H, width=W, image_format="BGR",
                         augmentations=T.AugmentationList([]))
    loader = torch.utils.data.DataLoader(frames, batch_size=None, num_workers=1)
    return [frame.shape for frame in loader]


def test_dataloader_worker_error_gives_back_the_original_message(tmp_path):
    names = _video_with_missing_frame(tmp_path)
    with pytest.raises(FileNotFoundError) as info:
        _iterate_with_a_worker(names)
    assert "DataLoader worker" in str(info.value) and "Original Traceback" in str(info.value)
    assert error_message(info.value) == f"Missing image file {names[2]} (video id 1, frame 2)"


@contextlib.contextmanager
def iai_log(folder):
    """The ``iai_d2`` logger set up as the tools do (console and folder/log.txt), restored on exit.
    Entered in the test body: the console handler must write to the stdout pytest captures there."""
    logger = logging.getLogger("iai_d2")
    saved = logger.handlers[:], logger.level, logger.propagate
    setup_logger(str(folder / "log.txt"), name="iai_d2", abbrev_name="iai")
    console_without_tracebacks()
    try:
        yield folder / "log.txt"
    finally:
        for handler in logger.handlers[:]:
            if handler not in saved[0]:
                handler.flush()
                logger.removeHandler(handler)
        logger.level, logger.propagate = saved[1:]


def test_worker_error_is_one_console_line_and_a_traceback_in_the_log(tmp_path, capfd):
    names = _video_with_missing_frame(tmp_path)
    args = argparse.Namespace(num_gpus=1, num_machines=1, machine_rank=0, dist_url="auto")
    with iai_log(tmp_path) as log_file, pytest.raises(SystemExit) as info:
        launch_or_exit(lambda _: _iterate_with_a_worker(names), args)
    assert info.value.code == f"error: Missing image file {names[2]} (video id 1, frame 2)"
    console = "".join(capfd.readouterr())
    assert "Traceback" not in console, console
    assert f"{names[2]} (video id 1, frame 2)" in console  # the log line on the console, one line
    log = log_file.read_text()
    assert "Original Traceback" in log and "read_video_frame" in log, log


def test_missing_frame_files_are_counted_when_the_loader_is_built(tmp_path):
    names = _video_with_missing_frame(tmp_path)
    records = [{"video_id": 1, "file_names": names},
               {"video_id": 2, "file_names": [str(tmp_path / "v2" / "00000.jpg"), "http://host/v2/00001.jpg"]}]
    with pytest.raises(FileNotFoundError) as info:
        check_frame_files(records, "tiny_split", shown=1)
    message = str(info.value)
    assert message.startswith("Missing image files: 2 of the 5 frames of tiny_split do not exist")
    assert f"first: {names[2]} (video id 1, frame 2)" in message and "v2" not in message, message
    check_frame_files([{"video_id": 1, "file_names": names[:2]}], "tiny_split")  # all there: no error
