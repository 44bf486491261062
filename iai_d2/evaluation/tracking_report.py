"""
The tracking diagnosis as one self-contained HTML page: per video, a filmstrip of its frames with
the masks coloured by identity, one row per labelling (ground truth, the model's IDs, IoU-linked
IDs), each ID switch marked on the frame where it happens (a swap: the GT object takes an id that
existed before; a new id: the object's track is cut), videos ordered by the AP lost to identity
(oracle minus model IDs). Frames are inlined as downscaled base64 JPEGs: the page opens anywhere,
without the dataset.
"""
import base64
import html
import math
from dataclasses import dataclass
from typing import Dict, List, Sequence

import cv2
import numpy as np
import pycocotools.mask as mask_util

from ..data.clip_mapper import read_video_frame
from ..utils import atomic_write
from ..visualization import draw_instances, identity_colors

__all__ = ["MARKER_COLORS", "ReportVideo", "ap_lost_order", "render_report", "select_frames", "write_report"]

# Labellings drawn (besides the ground truth), row titles.
ROWS = (("model", "model IDs"), ("iou_link", "IoU-linked IDs"))
# CSS colours of the switch markers; no identity colour is close to them.
MARKER_COLORS = {"swap": "#ff0090", "new": "#ffd000"}


@dataclass
class ReportVideo:
    """
    One video of the report.

    file_names: its T frames; height, width: the annotated frame size.
    gt_frames: per frame, {GT track id: RLE}.
    det_rles: per frame, the M_t detections' RLEs.
    ids: {labelling: per frame, M_t track ids} for the labellings of ``ROWS``.
    switches: {labelling: [(frame, GT track id, previous id, new id, "swap" | "new")]}.
    ap: {labelling: the video's AP (percent, NaN without GT)} for model, iou_link and oracle.
    """

    video_id: int
    file_names: Sequence[str]
    height: int
    width: int
    gt_frames: List[Dict[int, dict]]
    det_rles: List[List[dict]]
    ids: Dict[str, List[List[int]]]
    switches: Dict[str, list]
    ap: Dict[str, float]

    @property
    def ap_lost(self) -> float:
        """AP lost to identity: oracle minus model IDs, on the same detections."""
        return self.ap["oracle"] - self.ap["model"]


def ap_lost_order(video: ReportVideo):
    """Sort key: the most AP lost to identity first, videos without GT (NaN) last."""
    lost = video.ap_lost
    return (math.isnan(lost), 0.0 if math.isnan(lost) else -lost)


def select_frames(length: int, switch_frames: Sequence[int], max_frames: int) -> List[int]:
    """All frames if at most ``max_frames``, else every switch frame (up to ``max_frames``) and
    evenly spaced frames to fill, in order."""
    if length <= max_frames:
        return list(range(length))
    chosen = sorted(set(switch_frames))[:max_frames]
    for t in np.linspace(0, length - 1, max_frames).round().astype(int).tolist():
        if len(chosen) >= max_frames:
            break
        if t not in chosen:
            chosen.append(t)
    return sorted(chosen)


def _decode(rles: List[dict], size) -> np.ndarray:
    """(M, h, w) bool masks of M RLEs resized to ``size`` = (h, w)."""
    if not rles:
        return np.zeros((0, *size), dtype=bool)
    masks = mask_util.decode(rles)  # (H, W, M)
    masks = cv2.resize(masks, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
    return masks.reshape(size[0], size[1], -1).transpose(2, 0, 1).astype(bool)


def _jpeg_src(image_rgb: np.ndarray, quality: int) -> str:
    ok, data = cv2.imencode(".jpg", image_rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("OpenCV cannot encode a report frame as JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(data.tobytes()).decode("ascii")


def _cell(image_rgb, rles, ids, switches, quality) -> str:
    """One filmstrip cell: the frame with identity-coloured masks, and its switch markers."""
    masks = _decode(rles, image_rgb.shape[:2])
    drawn = draw_instances(image_rgb, masks, identity_colors(ids), [str(i) for i in ids])
    markers, kinds = [], []
    for _, gt, old, new, kind in switches:
        kinds.append(kind)
        arrow = "&#8644;" if kind == "swap" else "+"
        markers.append(f'<div class="marker {kind}" title="GT track {gt}: id {old} &#8594; {new} ({kind})">'
                       f"{arrow} {old}&#8594;{new}</div>")
    classes = " ".join(["frame"] + (["switch"] + sorted(set(kinds)) if kinds else []))
    return f'<td class="{classes}"><img src="{_jpeg_src(drawn, quality)}" alt="">{"".join(markers)}</td>'


def _fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.1f}"


def _video_section(video: ReportVideo, max_frames: int, thumb_height: int, quality: int) -> str:
    switch_frames = [s[0] for key, _ in ROWS for s in video.switches[key]]
    frames = select_frames(len(video.file_names), switch_frames, max_frames)
    scale = min(1.0, thumb_height / video.height)
    size = (max(1, round(video.width * scale)), max(1, round(video.height * scale)))
    rows = {"gt": [], **{key: [] for key, _ in ROWS}}
    for t in frames:
        image = read_video_frame(video.file_names[t], "RGB", video_id=video.video_id, frame_idx=t,
                                 height=video.height, width=video.width)
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        gt_ids = list(video.gt_frames[t])
        rows["gt"].append(_cell(image, [video.gt_frames[t][g] for g in gt_ids], gt_ids, [], quality))
        for key, _ in ROWS:
            events = [s for s in video.switches[key] if s[0] == t]
            rows[key].append(_cell(image, video.det_rles[t], video.ids[key][t], events, quality))
    counts = ", ".join(f"{title} {len(video.switches[key])}" for key, title in ROWS)
    ap = video.ap
    header = "".join(f"<th>{t}</th>" for t in frames)
    body = "".join(
        f'<tr class="{key}"><th class="row">{html.escape(title)}</th>{"".join(rows[key])}</tr>'
        for key, title in (("gt", "ground truth"), *ROWS)
    )
    return (
        f'<section class="video" id="video-{video.video_id}" data-video-id="{video.video_id}" '
        f'data-ap-lost="{_fmt(video.ap_lost)}">'
        f"<h2>video {video.video_id}: AP lost to identity {_fmt(video.ap_lost)}</h2>"
        f'<p class="scores">AP: model IDs {_fmt(ap["model"])}, IoU-linked {_fmt(ap["iou_link"])}, '
        f'oracle {_fmt(ap["oracle"])}; ID switches: {counts}; {len(video.file_names)} frames'
        f'{"" if len(frames) == len(video.file_names) else f", {len(frames)} shown"}</p>'
        f'<div class="strip"><table class="filmstrip"><thead><tr><th class="row">frame</th>{header}</tr>'
        f"</thead><tbody>{body}</tbody></table></div></section>"
    )


_STYLE = """
body { font-family: sans-serif; margin: 1em; background: #fff; color: #222; }
table.summary { border-collapse: collapse; margin-bottom: 1em; }
table.summary td, table.summary th { border: 1px solid #bbb; padding: 2px 6px; text-align: right; }
div.strip { overflow-x: auto; }
table.filmstrip { border-collapse: separate; border-spacing: 2px; }
table.filmstrip th.row { text-align: left; font-weight: normal; white-space: nowrap; padding-right: 6px; }
table.filmstrip td { padding: 0; border: 3px solid transparent; vertical-align: top; }
table.filmstrip img { display: block; }
td.switch.new { border-color: %(new)s; }
td.switch.swap { border-color: %(swap)s; }
div.marker { font-size: 11px; white-space: nowrap; }
div.marker.swap { background: %(swap)s; color: #fff; }
div.marker.new { background: %(new)s; color: #000; }
""" % MARKER_COLORS


def render_report(result: Dict, videos: Sequence[ReportVideo], max_videos: int = 20, max_frames: int = 40,
                  thumb_height: int = 96, quality: int = 75) -> str:
    """
    Args:
        result: a :func:`~iai_d2.evaluation.diagnosis.diagnose` result (dataset, rows, ...).
        videos: the split's videos; the ``max_videos`` with the most AP lost to identity are drawn
            (NaN last), at most ``max_frames`` frames each, ``thumb_height`` pixels high.
    Returns:
        the HTML page (str).
    """
    from .diagnosis import LABELLINGS, TABLE_COLUMNS

    ordered = sorted(videos, key=ap_lost_order)
    shown = ordered[:max_videos]
    summary = "".join(
        f"<tr><th>{LABELLINGS[key]}</th>"
        + "".join(f"<td>{_fmt(row[c]) if isinstance(row[c], float) else row[c]}</td>" for c in TABLE_COLUMNS)
        + "</tr>"
        for key, row in result["rows"].items()
    )
    dataset = html.escape(str(result["dataset"]))
    legend = (
        "Each row shows the same frames: ground-truth tracks, then the model's detections labelled with "
        "the model's IDs and with greedy mask-IoU linking; a colour (and the number drawn) is one "
        f'identity. A frame where a GT object changes id is framed: <span '
        f'style="background:{MARKER_COLORS["swap"]};color:#fff">&#8644; swap</span> (it takes an id seen '
        f'before) or <span style="background:{MARKER_COLORS["new"]}">+ new id</span> (its track is cut). '
        "Videos are ordered by the AP lost to identity: oracle minus model-ID video AP on the same detections."
    )
    sections = "".join(_video_section(v, max_frames, thumb_height, quality) for v in shown)
    more = (f'<p class="more">{len(ordered) - len(shown)} more videos not shown (raise the number of '
            "report videos).</p>" if len(ordered) > len(shown) else "")
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Tracking report: {dataset}'
        f"</title><style>{_STYLE}</style></head><body><h1>Tracking report: {dataset}</h1>"
        f'<table class="summary"><tr><th>identities</th>{"".join(f"<th>{c}</th>" for c in TABLE_COLUMNS)}'
        f'</tr>{summary}</table><p class="legend">{legend}</p>{sections}{more}</body></html>\n'
    )


def write_report(path: str, result: Dict, videos: Sequence[ReportVideo], **kwargs) -> None:
    """:func:`render_report` written atomically to ``path``."""
    page = render_report(result, videos, **kwargs)
    atomic_write(path, lambda f: f.write(page), "w")
