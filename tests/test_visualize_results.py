"""tools/visualize_results.py on the synthetic split: the ground truth turned into a submission is
drawn over the frames, one mp4 per video at the frames' size and count, colour where the masks are."""
import json
import zipfile

import cv2
import numpy as np
import pycocotools.mask as mask_util

from iai_d2.visualization import open_frames


def read_video(path):
    """The (H, W, 3) BGR frames of a video file."""
    frames, _, _ = open_frames(str(path))
    return list(frames)


def gt_as_results(valid):
    """Each GT track of a YTVIS json as a result entry scoring 0.9."""
    return [{"video_id": a["video_id"], "category_id": a["category_id"], "score": 0.9,
             "segmentations": a["segmentations"]} for a in valid["annotations"]]


def test_submission_zip_drawn_over_a_registered_split(synthetic_vis_root, run_tool, tmp_path):
    split = synthetic_vis_root / "synthetic_vis"
    valid = json.loads((split / "valid.json").read_text())
    submission = tmp_path / "submission.zip"
    with zipfile.ZipFile(submission, "w") as zf:
        zf.writestr("results.json", json.dumps(gt_as_results(valid)))
    out = tmp_path / "videos"
    proc = run_tool("visualize_results.py", "--results", submission, "--dataset", "synthetic_vis_val",
                    "--output", out, datasets_root=synthetic_vis_root, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{v['id']}.mp4" for v in valid["videos"])

    for video in valid["videos"]:
        frames = read_video(out / f"{video['id']}.mp4")
        assert len(frames) == video["length"]
        assert all(f.shape == (video["height"], video["width"], 3) for f in frames)
        # Inside the masks the drawn frame differs from the input frame; far outside it does not.
        annos = [a for a in valid["annotations"] if a["video_id"] == video["id"]]
        for t in (0, video["length"] - 1):
            source = cv2.imread(str(split / "valid" / "JPEGImages" / video["file_names"][t])).astype(int)
            segs = [a["segmentations"][t] for a in annos if a["segmentations"][t]]
            if not segs:
                continue
            inside = mask_util.decode(segs).any(axis=2).astype(bool)
            far = cv2.dilate(inside.astype(np.uint8), np.ones((15, 15), np.uint8)) == 0
            change = np.abs(frames[t].astype(int) - source).max(axis=2)
            assert change[inside].mean() > 3 * max(change[far].mean(), 2.0), (video["id"], t)


def test_gt_json_and_image_root_with_a_bad_entry(synthetic_vis_root, run_tool, tmp_path):
    split = synthetic_vis_root / "synthetic_vis"
    valid = json.loads((split / "valid.json").read_text())
    results = gt_as_results(valid)
    vid = valid["videos"][0]["id"]
    good = tmp_path / "results.json"
    good.write_text(json.dumps(results))
    out = tmp_path / "one"
    proc = run_tool("visualize_results.py", "--results", good, "--gt", split / "valid.json",
                    "--image-root", split / "valid" / "JPEGImages", "--output", out, "--videos", vid, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [p.name for p in out.iterdir()] == [f"{vid}.mp4"]

    results[1]["segmentations"] = results[1]["segmentations"][:-1]  # one frame short
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(results))
    proc = run_tool("visualize_results.py", "--results", bad, "--gt", split / "valid.json",
                    "--image-root", split / "valid" / "JPEGImages", "--output", tmp_path / "bad", timeout=120)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {bad}: result 1") and "segmentations" in last, last  # names file and entry
    assert not (tmp_path / "bad").exists() or not list((tmp_path / "bad").iterdir())
