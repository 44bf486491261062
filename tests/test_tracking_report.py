"""The tracking report (report.html) on two hand-built videos, loaded in a real browser: headless
Chromium renders the page; its DOM holds the video sections in AP-lost order and the switch
markers, its screenshot the identity colours and the marker colour."""
import re
import shutil
import subprocess

import cv2
import numpy as np
import pytest

from iai_d2.evaluation.tracking_report import MARKER_COLORS, ReportVideo, select_frames, write_report
from iai_d2.inference.relabel import as_rles, iou_link_ids, match_to_gt, tracking_statistics
from iai_d2.visualization import identity_colors

H, W = 96, 128
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def square(x, y, size=24):
    mask = np.zeros((H, W), dtype=bool)
    mask[y: y + size, x: x + size] = True
    return mask


def make_video(tmp_path, video_id, gt_tracks, model_ids, ap):
    """A ReportVideo whose detections are the GT masks. gt_tracks: per frame {GT id: mask};
    model_ids: per frame, the model's id of each GT (in dict order)."""
    folder = tmp_path / f"video{video_id}"
    folder.mkdir()
    file_names = []
    for t in range(len(gt_tracks)):
        path = str(folder / f"{t:05d}.jpg")
        cv2.imwrite(path, np.full((H, W, 3), 128, np.uint8))
        file_names.append(path)
    gt_frames = [{g: as_rles(m[None])[0] for g, m in frame.items()} for frame in gt_tracks]
    det_rles = [[gts[g] for g in gts] for gts in gt_frames]
    ids = {"model": model_ids, "iou_link": iou_link_ids(det_rles)}
    matches = match_to_gt(det_rles, gt_frames)
    switches = {key: tracking_statistics(ids[key], matches)["switches"] for key in ids}
    return ReportVideo(video_id, file_names, H, W, gt_frames, det_rles, ids, switches, ap)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """report.html of two videos: video 7 with an ID swap (AP lost 50) and video 3 without (AP lost 5)."""
    tmp_path = tmp_path_factory.mktemp("report")
    # Video 7: GT 1 and GT 2 move right; the model swaps their ids at frame 2.
    crossing = [{1: square(4 + 4 * t, 10), 2: square(4 + 4 * t, 60)} for t in range(4)]
    swapped = make_video(tmp_path, 7, crossing, [[0, 1], [0, 1], [1, 0], [1, 0]],
                         {"model": 40.0, "iou_link": 80.0, "oracle": 90.0})
    steady = make_video(tmp_path, 3, [{5: square(50, 30)} for _ in range(3)], [[0]] * 3,
                        {"model": 70.0, "iou_link": 70.0, "oracle": 75.0})
    result = {"dataset": "handmade<split>", "rows": {
        key: {"AP": 1.0, "AP50": 2.0, "AP75": 3.0, "AR1": 4.0, "AR10": 5.0, "HOTA": 6.0, "DetA": 7.0,
              "AssA": 8.0, "IDF1": 9.0, "id_switches": 2, "fragmentation": 1.5, "kept": 3, "swap": 2, "new": 0}
        for key in ("model", "iou_link", "oracle")}}
    path = tmp_path / "report.html"
    write_report(str(path), result, [steady, swapped])
    return path


def test_report_page_is_self_contained_and_ordered_by_ap_lost(report):
    page = report.read_text()
    assert "file://" not in page and "http" not in page  # frames inline, nothing fetched
    assert page.count('<img src="data:image/jpeg;base64,') == (4 + 3) * 3  # frames x (GT, model, IoU)
    assert re.findall(r'<section class="video" id="video-(\d+)"', page) == ["7", "3"]
    assert "handmade&lt;split&gt;" in page  # names are escaped


def test_select_frames_keeps_switch_frames_and_the_cap():
    assert select_frames(5, [3], 10) == [0, 1, 2, 3, 4]
    chosen = select_frames(100, [37, 38], 6)
    assert len(chosen) == 6 and {37, 38} <= set(chosen) and chosen == sorted(chosen)


def chromium():
    """The Chromium binary, or skip the test saying how to get one."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("Chromium is not installed (make setup installs the Debian package 'chromium' "
                "when it runs as root with apt-get; otherwise: apt-get install chromium)")


def run_chromium(tmp_path, *args):
    user_dir = tmp_path / f"chromium-profile-{len(list(tmp_path.iterdir()))}"
    proc = subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={user_dir}", *args],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_chromium_renders_sections_markers_and_identity_colours(report, tmp_path):
    url = report.as_uri()
    dom = run_chromium(tmp_path, "--dump-dom", url)
    assert re.findall(r'<section class="video" id="video-(\d+)"', dom) == ["7", "3"]
    # One swap cell in the model-ID row of video 7 (both GT objects change id at frame 2); IoU
    # linking follows the masks and switches nothing.
    model_row = re.search(r'<tr class="model">(.*?)</tr>', dom).group(1)
    assert model_row.count('class="frame switch swap"') == 1
    assert len(re.findall(r'<div class="marker swap"[^>]*>', dom)) == 2
    assert "&#8644;" in dom or "\u21c4" in dom
    assert 'class="frame switch' not in re.search(r'<tr class="iou_link">(.*?)</tr>', dom).group(1)

    png = tmp_path / "report.png"
    run_chromium(tmp_path, f"--screenshot={png}", "--window-size=1200,1100", url)
    shot = cv2.imread(str(png), cv2.IMREAD_COLOR)[:, :, ::-1].astype(int)  # RGB
    assert shot.std() > 20, "blank screenshot"
    for gt_id, color in zip((1, 2, 5), identity_colors([1, 2, 5])):  # GT outlines, JPEG-compressed
        near = (np.abs(shot - color.astype(int)).max(axis=2) <= 40).sum()
        assert near >= 30, f"GT {gt_id}'s identity colour {color} appears on {near} pixels only"
    marker = np.array([int(MARKER_COLORS["swap"][i: i + 2], 16) for i in (1, 3, 5)])
    on_marker = (shot == marker).all(axis=2).sum()
    assert on_marker >= 300, f"swap marker colour on {on_marker} pixels only"

