"""Every invariant of the YouTube-VIS format is one clear error naming the file and the offending id,
at each entry point of a json: the dataset loader, the evaluator's ground truth (the CLI, one line on
stderr, exit code 2) and the submission validator. Before iai_d2/ytvis_format.py, duplicate video,
category and annotation ids and wrong-length ``areas``/``bboxes`` were scored silently by the CLI."""
import copy
import json

import pytest

from iai_d2.data.datasets.ytvis import load_ytvis_json
from iai_d2.evaluation import validate_results
from iai_d2.evaluation.__main__ import main as eval_cli

from test_bad_inputs import perfect_results, set_path, split_json, write_json


def _duplicate_video(d):
    d["videos"].append(copy.deepcopy(d["videos"][0]))
    return d


def _edit(path, value):
    return lambda d: set_path(d, path, value)


INVARIANTS = [
    # (invariant, edit of split_json(), words the error must contain besides the file name)
    ("unique-video-ids", _duplicate_video, ["duplicate video id 1"]),
    ("unique-category-ids", lambda d: d["categories"].append({"id": 2, "name": "other"}) or d,
     ["duplicate category id 2"]),
    ("unique-annotation-ids", _edit(["annotations", 1, "id"], 10), ["duplicate annotation id 10"]),
    ("integer-ids", _edit(["videos", 0, "id"], "1"), ["video at position 0", "'1'"]),
    ("length-equals-file-names", _edit(["videos", 0, "length"], 2), ["video id 1", "3 file_names", "length 2"]),
    ("video-size", _edit(["videos", 1, "height"], 0), ["video id 2", "height 0"]),
    ("segmentations-per-frame", _edit(["annotations", 0, "segmentations"], [None, None]),
     ["annotation id 10", "'segmentations' has 2 entries", "3 frames"]),
    ("areas-per-frame", _edit(["annotations", 0, "areas"], [100, 100]),
     ["annotation id 10", "'areas' has 2 entries", "3 frames"]),
    ("bboxes-per-frame", _edit(["annotations", 1, "bboxes"], [[0, 0, 4, 4]] * 4),
     ["annotation id 11", "'bboxes' has 4 entries", "3 frames"]),
    ("rle-size-is-frame-size", _edit(["annotations", 1, "segmentations", 2, "size"], [32, 24]),
     ["annotation id 11", "frame 2", "RLE size [32, 24]", "[24, 32]"]),
    ("category-exists", _edit(["annotations", 0, "category_id"], 5), ["annotation id 10", "unknown category id 5"]),
    ("video-exists", _edit(["annotations", 1, "video_id"], 9), ["annotation id 11", "unknown video id 9"]),
]


@pytest.mark.parametrize("edit,words", [c[1:] for c in INVARIANTS], ids=[c[0] for c in INVARIANTS])
def test_format_invariant_is_one_error_at_every_entry_point(tmp_path, capsys, edit, words):
    gt_path = write_json(tmp_path / "gt.json", edit(split_json()))
    res_path = write_json(tmp_path / "results.json", perfect_results())

    with pytest.raises(ValueError) as info:
        load_ytvis_json(gt_path, str(tmp_path))
    messages = {"dataset loader": str(info.value)}
    with pytest.raises(ValueError) as info:
        validate_results(perfect_results(), gt_path)
    messages["submission validator"] = str(info.value)
    assert eval_cli(["--gt", gt_path, "--results", res_path]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    messages["evaluation CLI"] = captured.err.strip()

    for entry, message in messages.items():
        assert "\n" not in message and "Traceback" not in message, (entry, message)
        for word in [gt_path] + words:
            assert word in message, (entry, message)


def test_valid_split_passes_every_entry_point(tmp_path, capsys):
    """The unedited split: loaded, validated and scored (perfect predictions: AP 100)."""
    gt_path = write_json(tmp_path / "gt.json", split_json())
    res_path = write_json(tmp_path / "results.json", perfect_results())
    assert len(load_ytvis_json(gt_path, str(tmp_path))) == 2
    validate_results(perfect_results(), gt_path)
    assert eval_cli(["--gt", gt_path, "--results", res_path]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["AP"] == pytest.approx(100.0)


def test_bad_results_entry_names_the_results_file(tmp_path, capsys):
    """A results file violating the split (unknown video) is named in the CLI's one-line error."""
    gt_path = write_json(tmp_path / "gt.json", split_json())
    results = perfect_results()
    results[1]["video_id"] = 9
    res_path = write_json(tmp_path / "results.json", results)
    assert eval_cli(["--gt", gt_path, "--results", res_path]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and res_path in err and "result 1" in err and "video 9" in err, err


@pytest.mark.parametrize("with_orjson", [True, False], ids=["orjson", "stdlib"])
def test_json_parsers_read_the_same_files(tmp_path, monkeypatch, with_orjson):
    """orjson (when installed) and the standard library give equal objects, bit-equal floats, and
    both read the NaN literal Python's json writes (orjson refuses it: the stdlib takes over)."""
    from iai_d2.evaluation import ytvis_eval

    if with_orjson:
        pytest.importorskip("orjson")
    else:
        monkeypatch.setattr(ytvis_eval, "orjson", None)
    results = perfect_results()
    results[0]["score"] = 0.1 + 0.2  # 0.30000000000000004: not a short decimal
    path = write_json(tmp_path / "results.json", results)
    assert ytvis_eval.read_json(path, "results") == results
    results[1]["score"] = float("nan")
    parsed = ytvis_eval.read_json(write_json(tmp_path / "nan.json", results), "results")
    assert parsed[0]["score"] == 0.1 + 0.2 and parsed[1]["score"] != parsed[1]["score"]
    with pytest.raises(ValueError, match="bad.json is not valid JSON"):
        ytvis_eval.read_json(write_json(tmp_path / "bad.json", json.dumps(results)[:-3]), "results")
