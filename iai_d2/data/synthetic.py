"""Deterministic synthetic video instance segmentation data in the YouTube-VIS 2019 layout.

Each video shows 1-8 moving, spinning, textured shapes (four categories that differ in shape,
colour and texture) over a textured-noise background. Objects enter and leave the frame and cross
each other in depth order; ``occlusion`` in [0, 1] raises the share of tracks that are placed to
cross another one, and of crossings in which a larger object fully hides a smaller one. The visible
(modal) mask of every object is annotated; fully hidden or out-of-frame frames are ``None``.

Output of ``generate_synthetic_vis(out_dir, ...)``::

    out_dir/train.json, out_dir/valid.json  (valid is annotated too, for local mAP)
    out_dir/{train,valid}/JPEGImages/<video>/<frame:05d>.jpg
"""
import os
from dataclasses import dataclass

import cv2
import numpy as np
import pycocotools.mask as mask_util

from ..utils import json_rle
from .datasets.ytvis import SYNTHETIC_CATEGORIES, save_ytvis_json

__all__ = ["SYNTHETIC_CATEGORIES", "SyntheticVideo", "generate_synthetic_vis"]

# Indices into SYNTHETIC_CATEGORIES (circle, square, triangle, cross).
_CIRCLE, _SQUARE, _TRIANGLE, _CROSS = range(4)
# Radius of the largest circle inside each shape, in units of the shape radius r.
_INRADIUS = {_CIRCLE: 1.0, _SQUARE: 0.8, _TRIANGLE: 0.575, _CROSS: 0.3}
_OUTER = 1.15  # every shape lies within 1.15 r of its centre (square corner: 0.8 * sqrt(2))
_MAX_HIDDEN_RADIUS = 0.14  # only objects up to this radius (x min(H, W)) get fully hidden
_SIN60 = np.sqrt(3) / 2


def _shape_mask(category, u, v):
    """Inside test in shape coordinates (u, v) = offset from the centre / r, rotated."""
    if category == _CIRCLE:
        return u * u + v * v <= 1.0
    if category == _SQUARE:
        return (np.abs(u) <= 0.8) & (np.abs(v) <= 0.8)
    if category == _TRIANGLE:  # circumradius 1.15, apex up
        return (v <= 0.575) & (_SIN60 * u - 0.5 * v <= 0.575) & (-_SIN60 * u - 0.5 * v <= 0.575)
    au, av = np.abs(u), np.abs(v)
    return ((au <= 0.3) & (av <= 1.0)) | ((av <= 0.3) & (au <= 1.0))


def _texture(category, u, v, phase):
    """Brightness modulation in [0.55, 1]: rings, checkerboard, stripes or dots."""
    if category == _CIRCLE:
        return 0.8 + 0.2 * np.cos(2 * np.pi * 2.5 * np.sqrt(u * u + v * v) + phase)
    if category == _SQUARE:
        return 0.65 + 0.35 * ((np.floor(u * 3) + np.floor(v * 3)) % 2)
    if category == _TRIANGLE:
        return 0.75 + 0.25 * np.cos(2 * np.pi * 3 * v + phase)
    return np.where(np.cos(2 * np.pi * 4 * u) * np.cos(2 * np.pi * 4 * v) > 0.3, 1.0, 0.55)


def _reflect(x, lo, hi):
    """Fold ``x`` into [lo, hi] by mirroring at the borders (bouncing motion)."""
    span = hi - lo
    y = np.mod(x - lo, 2 * span)
    return lo + np.where(y > span, 2 * span - y, y)


@dataclass
class _Track:
    category: int
    radius: float
    depth: float  # smaller is nearer the camera
    origin: np.ndarray  # centre at t = 0 before bouncing, (x, y)
    velocity: np.ndarray  # pixels per frame
    bounce: bool  # stays in the frame (bounces) or crosses its border
    angle: float
    spin: float
    colour: np.ndarray
    phase: float

    def linear_centre(self, t):
        return self.origin + self.velocity * t

    def centre(self, t, width, height):
        c = self.linear_centre(t)
        if self.bounce:
            c = np.array([_reflect(c[0], 0, width), _reflect(c[1], 0, height)])
        return c


class SyntheticVideo:
    """
    One synthetic video. Tracks are sampled at construction; frames are rendered on demand, and
    ``render(t)`` is a deterministic function of the generator state and ``t``.
    """

    def __init__(self, rng, num_frames, height, width, occlusion):
        """
        Args:
            rng (np.random.Generator): source of all randomness of this video.
            num_frames, height, width (int): video size.
            occlusion (float): in [0, 1]; more crossings and full occlusions when larger.
        """
        if not 0.0 <= occlusion <= 1.0:
            raise ValueError(f"occlusion must be in [0, 1], got {occlusion}")
        self.num_frames, self.height, self.width = num_frames, height, width
        self._rng = rng
        self._occlusion = occlusion
        self._scale = min(height, width)
        self._tracks = []
        for _ in range(int(rng.integers(1, 9))):
            self._tracks.append(self._sample_track())
        self.category_ids = [SYNTHETIC_CATEGORIES[t.category]["id"] for t in self._tracks]
        self._background = self._sample_background()
        self._noise_seed = int(rng.integers(2**31))

    def _new_track(self, category=None, radius=None):
        rng = self._rng
        category = int(rng.integers(len(SYNTHETIC_CATEGORIES))) if category is None else category
        jitter = rng.integers(-30, 31, size=3)
        return _Track(
            category=category,
            radius=self._scale * rng.uniform(0.1, 0.18) if radius is None else radius,
            depth=rng.random(),
            origin=np.zeros(2),
            velocity=np.zeros(2),
            bounce=True,
            angle=rng.uniform(0, 2 * np.pi),
            spin=rng.uniform(-0.15, 0.15),
            colour=np.clip(np.array(SYNTHETIC_CATEGORIES[category]["color"]) + jitter, 0, 255),
            phase=rng.uniform(0, 2 * np.pi),
        )

    def _direction(self):
        a = self._rng.uniform(0, 2 * np.pi)
        return np.array([np.cos(a), np.sin(a)])

    def _sample_track(self):
        rng, occ = self._rng, self._occlusion
        if self._tracks and rng.random() < 0.15 + 0.8 * occ:
            return self._sample_crossing(self._tracks[int(rng.integers(len(self._tracks)))])
        track = self._new_track()
        if self._tracks and rng.random() < 0.5:
            self._make_transient(track)
        else:
            track.origin = rng.uniform(0, 1, 2) * (self.width, self.height)
            track.velocity = self._direction() * self._scale * rng.uniform(0.01, 0.04)
        return track

    def _make_transient(self, track):
        """An object entering (leaving) through a random border, fully outside before (after)."""
        rng, T, W, H = self._rng, self.num_frames, self.width, self.height
        edge = int(rng.integers(4))
        normal = np.array([[1, 0], [-1, 0], [0, 1], [0, -1]][edge], dtype=float)  # inward
        s = rng.uniform(0.2, 0.8)
        point = np.array([[0, s * H], [W, s * H], [s * W, 0], [s * W, H]][edge])
        entering = rng.random() < 0.5
        speed = self._scale * rng.uniform(0.035, 0.07)
        tangent = normal[::-1] * rng.uniform(-0.4, 0.4) * speed
        track.velocity = (normal if entering else -normal) * speed + tangent
        # t_edge: the frame at which the object just touches the border from outside.
        half = (T - 1) / 2
        t_edge = rng.uniform(1, max(1, half)) if entering else rng.uniform(half, max(half, T - 2))
        track.origin = point - normal * _OUTER * track.radius - track.velocity * t_edge
        track.bounce = False

    def _sample_crossing(self, other):
        """A track placed to overlap ``other`` around a frame t_m (or to fully hide it)."""
        rng, occ = self._rng, self._occlusion
        centres = [other.centre(t, self.width, self.height) for t in range(self.num_frames)]
        inside = [
            t for t, (x, y) in enumerate(centres) if 0 <= x <= self.width and 0 <= y <= self.height
        ]
        t_m = inside[int(rng.integers(len(inside)))] if inside else 0
        hide = other.radius <= _MAX_HIDDEN_RADIUS * self._scale and rng.random() < 0.5 * occ
        if hide:  # a larger, nearer circle/square hides ``other`` completely for a few frames
            category = int(rng.choice([_CIRCLE, _SQUARE]))
            slack = other.radius * rng.uniform(0.3, 0.5)
            track = self._new_track(category, (_OUTER * other.radius + slack) / _INRADIUS[category])
            track.depth = other.depth - rng.uniform(0.01, 0.1)
            offset = np.zeros(2)
            relative = self._direction() * slack * rng.uniform(0.25, 0.5)
        else:
            track = self._new_track()
            reach = other.radius + track.radius
            offset = self._direction() * reach * rng.uniform(0, 0.6) * (1 - 0.7 * occ)
            frames = rng.uniform(3, 6) + 4 * occ  # roughly how long the two overlap
            relative = self._direction() * 2 * reach / frames
        track.velocity = other.velocity + relative
        track.origin = other.linear_centre(t_m) + offset - track.velocity * t_m
        track.bounce = other.bounce
        return track

    def _sample_background(self):
        """Low-frequency, desaturated colour noise plus static grain: (H, W, 3) float32."""
        rng, H, W = self._rng, self.height, self.width
        coarse = rng.uniform(0, 1, (H // 16 + 2, W // 16 + 2, 3)).astype(np.float32)
        smooth = cv2.resize(coarse, (W, H), interpolation=cv2.INTER_CUBIC)
        grey = smooth.mean(axis=2, keepdims=True)
        grain = rng.normal(0, 8, (H, W, 1)).astype(np.float32)
        return 70 + 90 * (0.7 * grey + 0.3 * smooth) + grain

    def render(self, t):
        """
        Returns:
            image (ndarray (H, W, 3) uint8, RGB), visible (ndarray (N, H, W) bool: the masks that
            are annotated), amodal (ndarray (N, H, W) bool: full shapes, occluded parts included),
            for the N tracks in the order of ``category_ids``.
        """
        H, W, N = self.height, self.width, len(self._tracks)
        image = self._background.copy()
        occupied = np.zeros((H, W), dtype=bool)
        visible = np.zeros((N, H, W), dtype=bool)
        amodal = np.zeros((N, H, W), dtype=bool)
        for k in sorted(range(N), key=lambda i: self._tracks[i].depth):
            track = self._tracks[k]
            cx, cy = track.centre(t, W, H)
            reach = _OUTER * track.radius + 1
            x0, x1 = max(int(cx - reach), 0), min(int(cx + reach) + 1, W)
            y0, y1 = max(int(cy - reach), 0), min(int(cy + reach) + 1, H)
            if x0 >= x1 or y0 >= y1:
                continue
            ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32) + 0.5
            a = track.angle + track.spin * t
            dx, dy = xs - cx, ys - cy
            u = (dx * np.cos(a) + dy * np.sin(a)) / track.radius
            v = (-dx * np.sin(a) + dy * np.cos(a)) / track.radius
            full = _shape_mask(track.category, u, v)
            vis = full & ~occupied[y0:y1, x0:x1]
            shade = _texture(track.category, u[vis], v[vis], track.phase)
            image[y0:y1, x0:x1][vis] = track.colour * shade[:, None]
            occupied[y0:y1, x0:x1] |= full
            amodal[k, y0:y1, x0:x1] = full
            visible[k, y0:y1, x0:x1] = vis
        noise = np.random.default_rng([self._noise_seed, t]).normal(0, 4, (H, W, 3))
        return np.clip(image + noise, 0, 255).astype(np.uint8), visible, amodal


def _encode(mask):
    return json_rle(mask_util.encode(np.asfortranarray(mask.astype(np.uint8))))


def _write_split(out_dir, split, num_videos, num_frames, height, width, seed, occlusion):
    """Render one split's frames to disk and return its YouTube-VIS json dict."""
    videos, annotations = [], []
    for i in range(num_videos):
        name = f"{split}{i + 1:04d}"
        video = SyntheticVideo(
            np.random.default_rng([seed, ["train", "valid"].index(split), i]),
            num_frames, height, width, occlusion,
        )
        frame_dir = os.path.join(out_dir, split, "JPEGImages", name)
        os.makedirs(frame_dir, exist_ok=True)
        tracks = [[None] * num_frames for _ in video.category_ids]
        for t in range(num_frames):
            image, visible, _ = video.render(t)
            cv2.imwrite(os.path.join(frame_dir, f"{t:05d}.jpg"), image[:, :, ::-1],
                        [cv2.IMWRITE_JPEG_QUALITY, 92])
            for k, mask in enumerate(visible):
                if mask.any():
                    tracks[k][t] = _encode(mask)
        video_id = i + 1
        videos.append({"id": video_id, "width": width, "height": height, "length": num_frames,
                       "file_names": [f"{name}/{t:05d}.jpg" for t in range(num_frames)]})
        for category_id, segms in zip(video.category_ids, tracks):
            if all(s is None for s in segms):
                continue
            annotations.append({
                "id": len(annotations) + 1,
                "video_id": video_id,
                "category_id": category_id,
                "iscrowd": 0,
                "height": height,
                "width": width,
                "length": num_frames,
                "segmentations": segms,
                "bboxes": [None if s is None else mask_util.toBbox(s).tolist() for s in segms],
                "areas": [None if s is None else int(mask_util.area(s)) for s in segms],
            })
    return {
        "info": {"description": "iai_d2 synthetic moving shapes", "seed": seed,
                 "occlusion": occlusion},
        "licenses": [],
        "videos": videos,
        "annotations": annotations,
        "categories": [{k: c[k] for k in ("id", "name", "supercategory")}
                       for c in SYNTHETIC_CATEGORIES],
    }


def generate_synthetic_vis(out_dir, num_videos=60, num_frames=12, height=128, width=160, seed=0,
                           occlusion=0.5, num_val_videos=None):
    """
    Write a synthetic YouTube-VIS dataset (train + annotated valid split) to ``out_dir``.

    Args:
        out_dir (str): output directory.
        num_videos (int): train videos.
        num_frames, height, width (int): size of every video.
        seed (int): everything (json and image bytes) is a deterministic function of the seed.
        occlusion (float): in [0, 1], raises crossings, overlap and full occlusions.
        num_val_videos (int or None): valid videos; default ``max(1, num_videos // 5)``.

    Returns:
        (str, str): paths of train.json and valid.json.
    """
    if num_val_videos is None:
        num_val_videos = max(1, num_videos // 5)
    paths = []
    for split, count in (("train", num_videos), ("valid", num_val_videos)):
        data = _write_split(out_dir, split, count, num_frames, height, width, seed, occlusion)
        path = os.path.join(out_dir, f"{split}.json")
        save_ytvis_json(data, path)
        paths.append(path)
    return tuple(paths)
