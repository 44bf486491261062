"""Dataset mapper for video records: training clips with clip-consistent augmentation, and whole
test videos whose frames are decoded lazily."""
import copy
import logging
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import BitMasks

__all__ = [
    "YTVISClipDatasetMapper",
    "VideoFrames",
    "read_video_frame",
    "return_clip_indices",
    "sample_clip_indices",
    "track_returns",
]

logger = logging.getLogger(__name__)


def read_video_frame(file_name, image_format, *, video_id, frame_idx, height, width):
    """
    Read one frame and check its size against the video's.

    Returns:
        ndarray (H, W, 3) uint8 in ``image_format``.

    Raises:
        FileNotFoundError / ValueError naming the file, video id and frame index.
    """
    where = f"{file_name} (video id {video_id}, frame {frame_idx})"
    try:
        image = utils.read_image(file_name, format=image_format)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"Missing image file {where}") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"Cannot decode image file {where}: {e}") from e
    try:
        utils.check_image_size({"height": height, "width": width}, image)
    except utils.SizeMismatchError as e:
        raise utils.SizeMismatchError(f"{where}: {e}") from e
    return image


def _to_tensor(image):
    """(H, W, 3) ndarray -> (3, H, W) uint8 tensor."""
    return torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))


def sample_clip_indices(candidates, num_frames, max_gap, shuffle=False, rng=np.random):
    """
    Sample a training clip from a video's candidate frames.

    Args:
        candidates (list[int]): sorted frame indices to choose from.
        num_frames (int): T.
        max_gap (int): successive picks are 1..max_gap apart in ``candidates``.
        shuffle (bool): return the clip in random instead of temporal order.
        rng: ``np.random`` or an ``np.random.RandomState``.

    Returns:
        list[int]: T frame indices. The start is uniform and the gaps are bounded so the clip
        fits; with fewer than T candidates every candidate is used and repeated in order.
    """
    n = len(candidates)
    if n <= num_frames:
        positions = (np.arange(num_frames) * n) // num_frames
    else:
        positions = [rng.randint(0, n - num_frames + 1)]
        for k in range(1, num_frames):
            gap_limit = min(max_gap, n - 1 - positions[-1] - (num_frames - 1 - k))
            positions.append(positions[-1] + rng.randint(1, gap_limit + 1))
    indices = [candidates[p] for p in positions]
    if shuffle:
        rng.shuffle(indices)
    return indices


def track_returns(annotations):
    """
    The returns of a video's tracks: (l, r) when a track is annotated (non-crowd) at frame l, in
    none of the frames l+1 .. r-1 (r - l >= 2: hidden, out of view or unannotated) and at frame r.

    Args:
        annotations (list[list[dict]]): per frame, the annotations with their track ``id``.
    Returns:
        list[tuple[int, int]] in track order, then time.
    """
    present = defaultdict(list)
    for t, annos in enumerate(annotations):
        for a in annos:
            if not a.get("iscrowd", 0):
                present[a["id"]].append(t)
    return [(l, r) for frames in present.values() for l, r in zip(frames, frames[1:]) if r - l >= 2]


def return_clip_indices(length, ret, num_frames, rng=np.random):
    """
    A training clip around a return ``ret`` = (l, r) (see :func:`track_returns`): k consecutive
    frames ending at l, then T - k consecutive frames starting at r, k drawn in 1 .. T-1 and
    moved as little as needed to fit the video; None when the video is too short for T frames.
    """
    l, r = ret
    if num_frames < 2 or (l + 1) + (length - r) < num_frames:
        return None
    k = min(max(rng.randint(1, num_frames), num_frames - (length - r)), l + 1)
    return list(range(l - k + 1, l + 1)) + list(range(r, r + num_frames - k))


class VideoFrames(Sequence):
    """
    The frames of one video as a lazy sequence: ``frames[i]`` reads frame i from disk when
    accessed and returns a (3, h, w) uint8 tensor, resized by the test-time augmentations.
    Nothing is cached, so memory does not grow with the video length.
    """

    def __init__(self, file_names, *, video_id, height, width, image_format, augmentations):
        self.file_names = list(file_names)
        self.video_id, self.height, self.width = video_id, height, width
        self.image_format = image_format
        self.augmentations = augmentations

    def __len__(self):
        return len(self.file_names)

    def __getitem__(self, idx):
        if not -len(self) <= idx < len(self):
            raise IndexError(f"frame {idx} out of range for video {self.video_id} of {len(self)}")
        idx %= len(self)
        image = read_video_frame(
            self.file_names[idx], self.image_format, video_id=self.video_id, frame_idx=idx,
            height=self.height, width=self.width,
        )
        aug_input = T.AugInput(image)
        self.augmentations(aug_input)
        return _to_tensor(aug_input.image)


class YTVISClipDatasetMapper:
    """
    Map a video record (``load_ytvis_json``) to model inputs.

    Training: a clip of T frames (``sample_clip_indices`` over the frames that have non-crowd
    annotations, or all frames if none has), augmented with one draw for the whole clip
    (``augment_by_clip``) or one per frame, returning {"video_id", "height", "width", "length",
    "file_names" [T], "frame_indices" [T], "image": [T (3, h, w) uint8], "instances": [T Instances
    with gt_boxes, gt_classes, gt_masks (BitMasks), gt_ids]}. ``gt_ids`` is the clip slot: the
    rank of the track id among the track ids present in the clip. Crowd annotations are dropped.

    Test: {"video_id", "height", "width", "length", "file_names", "frames": VideoFrames}.
    The input record is never modified.
    """

    @configurable
    def __init__(
        self,
        is_train=True,
        *,
        augmentations,
        image_format,
        sampling_frame_num=5,
        sampling_frame_range=3,
        sampling_frame_shuffle=False,
        sampling_return_prob=0.0,
        augment_by_clip=True,
        recompute_boxes=False,
    ):
        """
        Args:
            is_train (bool): clip sampling (True) or whole-video lazy output (False).
            augmentations (list[Augmentation or Transform]): applied to every frame.
            image_format (str): "BGR", "RGB", ... (see ``detection_utils.read_image``).
            sampling_frame_num (int): T, frames per training clip.
            sampling_frame_range (int): largest gap between successive clip frames.
            sampling_frame_shuffle (bool): shuffle the clip frames (off: temporal order).
            sampling_return_prob (float): probability that a clip is built around a return of a
                track after a gap (``return_clip_indices``), when the video has one.
            augment_by_clip (bool): one augmentation draw for all frames of a clip.
            recompute_boxes (bool): boxes from the augmented masks (needed with cropping).
        """
        if sampling_frame_num < 1 or sampling_frame_range < 1:
            raise ValueError("sampling_frame_num and sampling_frame_range must be >= 1")
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.sampling_frame_num = sampling_frame_num
        self.sampling_frame_range = sampling_frame_range
        self.sampling_frame_shuffle = sampling_frame_shuffle
        self.sampling_return_prob = sampling_return_prob
        self.augment_by_clip = augment_by_clip
        self.recompute_boxes = recompute_boxes
        mode = "training" if is_train else "inference"
        logger.info(f"[YTVISClipDatasetMapper] Augmentations used in {mode}: {augmentations}")

    @classmethod
    def from_config(cls, cfg, is_train=True):
        augs = utils.build_augmentation(cfg, is_train)
        crop = is_train and cfg.INPUT.CROP.ENABLED
        if crop:
            augs.insert(0, T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE))
        return {
            "is_train": is_train,
            "augmentations": augs,
            "image_format": cfg.INPUT.FORMAT,
            "sampling_frame_num": cfg.INPUT.SAMPLING_FRAME_NUM,
            "sampling_frame_range": cfg.INPUT.SAMPLING_FRAME_RANGE,
            "sampling_frame_shuffle": cfg.INPUT.SAMPLING_FRAME_SHUFFLE,
            "sampling_return_prob": cfg.INPUT.SAMPLING_RETURN_PROB,
            "augment_by_clip": cfg.INPUT.AUGMENT_BY_CLIP,
            "recompute_boxes": crop,
        }

    def __call__(self, dataset_dict):
        """
        Args:
            dataset_dict (dict): one video record.

        Returns:
            dict: see the class docstring.
        """
        video = {k: dataset_dict[k] for k in ("video_id", "height", "width", "length")}
        if not self.is_train:
            video["file_names"] = list(dataset_dict["file_names"])
            video["frames"] = VideoFrames(
                dataset_dict["file_names"], video_id=video["video_id"], height=video["height"],
                width=video["width"], image_format=self.image_format,
                augmentations=self.augmentations,
            )
            return video
        if "annotations" not in dataset_dict:
            raise ValueError(f"Video id {video['video_id']} has no annotations; cannot train on it")
        annotations = dataset_dict["annotations"]
        candidates = [
            i for i, annos in enumerate(annotations) if any(not a.get("iscrowd", 0) for a in annos)
        ] or list(range(video["length"]))
        frame_indices = None
        if self.sampling_return_prob > 0 and np.random.rand() < self.sampling_return_prob:
            returns = track_returns(annotations)
            if returns:
                ret = returns[np.random.randint(len(returns))]
                frame_indices = return_clip_indices(video["length"], ret, self.sampling_frame_num)
        if frame_indices is None:
            frame_indices = sample_clip_indices(
                candidates, self.sampling_frame_num, self.sampling_frame_range,
                self.sampling_frame_shuffle,
            )
        video["file_names"] = [dataset_dict["file_names"][i] for i in frame_indices]
        video["frame_indices"] = frame_indices
        video["image"], video["instances"] = [], []
        transforms = None
        for frame_idx, file_name in zip(frame_indices, video["file_names"]):
            image = read_video_frame(
                file_name, self.image_format, video_id=video["video_id"], frame_idx=frame_idx,
                height=video["height"], width=video["width"],
            )
            if transforms is None or not self.augment_by_clip:
                aug_input = T.AugInput(image)
                transforms = self.augmentations(aug_input)
                image = aug_input.image
            else:
                image = transforms.apply_image(image)
            video["image"].append(_to_tensor(image))
            annos = copy.deepcopy(annotations[frame_idx])
            video["instances"].append(self._frame_instances(annos, transforms, image.shape[:2]))
        track_ids = torch.unique(torch.cat([x.gt_ids for x in video["instances"]]))
        for instances in video["instances"]:
            instances.gt_ids = torch.searchsorted(track_ids, instances.gt_ids)
        return video

    def _frame_instances(self, annos, transforms, image_size):
        """Non-crowd annotations of one frame -> Instances; ``gt_ids`` holds the track ids."""
        annos = [
            utils.transform_instance_annotations(obj, transforms, image_size)
            for obj in annos
            if not obj.get("iscrowd", 0)
        ]
        instances = utils.annotations_to_instances(annos, image_size, mask_format="bitmask")
        if not instances.has("gt_masks"):
            instances.gt_masks = BitMasks(torch.zeros((0, *image_size), dtype=torch.bool))
        if self.recompute_boxes:
            instances.gt_boxes = instances.gt_masks.get_bounding_boxes()
        instances.gt_ids = torch.tensor([obj["id"] for obj in annos], dtype=torch.int64)
        return utils.filter_empty_instances(instances)
