"""VideoPredictor: a DefaultPredictor-style streaming interface to an IAI model."""

import logging

import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.modeling import build_model
from detectron2.structures import Instances

from .engine import AtomicCheckpointer
from .utils import check_weights

__all__ = ["VideoPredictor"]

logger = logging.getLogger(__name__)


class VideoPredictor:
    """
    Online inference on a stream of frames, one call per frame::

        predictor = VideoPredictor(cfg)
        predictor.reset()                       # start a new video
        for frame in frames:                    # BGR uint8 (H, W, 3), like cv2 reads them
            instances = predictor(frame)        # pred_boxes, pred_masks, scores, pred_classes, ID

    ``ID`` is the identity of each instance, stable across the frames of one video. Memory is
    bounded, so a stream of any length (a webcam) runs in constant memory.
    """

    def __init__(self, cfg):
        self.cfg = cfg.clone()
        self.model = build_model(self.cfg)
        self.model.eval()
        self.metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0] if len(cfg.DATASETS.TEST) else "__unused")
        check_weights(cfg.MODEL.WEIGHTS)
        if not cfg.MODEL.WEIGHTS:
            logger.warning("VideoPredictor: MODEL.WEIGHTS is empty, the model is untrained")
        AtomicCheckpointer(self.model).load(cfg.MODEL.WEIGHTS)  # bad files: ValueError naming them
        self.aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
        self.input_format = cfg.INPUT.FORMAT
        if self.input_format not in ("RGB", "BGR"):
            raise ValueError(f"INPUT.FORMAT must be RGB or BGR, got {self.input_format!r}")
        self.state = None

    def reset(self) -> None:
        """Forget every track: the next frame starts a new video."""
        self.state = self.model.new_video_state()

    def __call__(self, frame_bgr: np.ndarray) -> Instances:
        """
        Args:
            frame_bgr: (H, W, 3) uint8 image in BGR order.
        Returns:
            Instances at (H, W) with pred_boxes, scores, pred_classes, pred_masks (bool), ID.
        """
        if not isinstance(frame_bgr, np.ndarray) or frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3:
            shape = getattr(frame_bgr, "shape", None)
            raise ValueError(f"VideoPredictor expects an (H, W, 3) BGR uint8 array, got shape {shape}")
        if frame_bgr.dtype != np.uint8:  # a float frame in [0, 1] or a 16-bit frame gives junk tracks
            raise ValueError(f"VideoPredictor expects a uint8 frame (0..255), got dtype {frame_bgr.dtype}; "
                             "convert it, e.g. (frame * 255).round().astype(np.uint8) for [0, 1] floats")
        if frame_bgr.shape[0] < 1 or frame_bgr.shape[1] < 1:
            raise ValueError(f"VideoPredictor got an empty frame of shape {frame_bgr.shape}")
        if self.state is None:
            self.reset()
        if self.input_format == "RGB":
            frame_bgr = frame_bgr[:, :, ::-1]
        height, width = frame_bgr.shape[:2]
        image = self.aug.get_transform(frame_bgr).apply_image(frame_bgr)
        image = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        with torch.no_grad():
            instances = self.model.inference_frame(self.state, image, height, width)
        return instances.to("cpu")
