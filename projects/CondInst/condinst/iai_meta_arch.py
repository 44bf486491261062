"""IAICondInst: CondInst turned into an online video instance segmenter with IAI's identity
pathway (:class:`iai_d2.modeling.IAIVideoModel`, shared with IAIRCNN)."""

from typing import Dict, List

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import ImageList, Instances

from iai_d2.modeling import IAIVideoModel, video_config

from .meta_arch import CondInst

__all__ = ["IAICondInst"]


@META_ARCH_REGISTRY.register()
class IAICondInst(IAIVideoModel, CondInst):
    """
    CondInst on an :class:`IAIFPN` backbone with P3-P7 (``build_iai_retinanet_resnet_fpn_backbone``):
    the association level is fused with the memory before the FPN, exactly as in IAIRCNN. Training
    (clips), memory, ID targets, the dense ID decoder and loss, per-frame inference and video
    inference are :class:`IAIVideoModel`'s; this class supplies CondInst's detector hooks.

    MODEL.IAI.ID_DECODER:
        "dense": the shared dense ID decoder on the association output (a detection's ID
            probabilities are the decoded probabilities averaged inside its mask).
        "fcos": the paper's ID branch in the FCOS head (Conv3x3 + GN + ReLU on the classification
            tower, then N sigmoid outputs: slots 0..N-2 and "new"), trained with a sigmoid focal
            ID loss (``loss_id_fcos``; MODEL.IAI.ID_LOSS_WEIGHT / ID_FOCAL_ALPHA / ID_FOCAL_GAMMA)
            over the positive locations of the FCOS assignment, each taking its GT instance's ID
            target, normalised by the number of positives. A detection's ID probabilities are its
            location's sigmoids (background 0).
    Per frame at inference: the top MODEL.IAI.INFERENCE.MAX_PER_FRAME detections after NMS, masks
    binarised at MODEL.IAI.INFERENCE.MASK_THRESH.
    """

    ID_DECODERS = ("dense", "fcos")
    IDENTITY_MODULES = IAIVideoModel.IDENTITY_MODULES + ("head.id_tower", "head.id_logits")

    @configurable
    def __init__(self, *, video: Dict, max_per_frame: int, **kwargs):
        """
        Args:
            video: arguments of :meth:`IAIVideoModel._setup_video` (see ``video_config``).
            max_per_frame: detections kept per frame at inference.
            kwargs: arguments of :class:`CondInst`.
        """
        super().__init__(**kwargs)
        self._setup_video(**video)
        self.detections_per_image = max_per_frame

    @classmethod
    def _head_num_ids(cls, cfg) -> int:
        return cfg.MODEL.IAI.NUM_IDS if cfg.MODEL.IAI.ID_DECODER == "fcos" else 0

    @classmethod
    def from_config(cls, cfg):
        iai = cfg.MODEL.IAI
        if iai.ID_DECODER not in cls.ID_DECODERS:  # before building anything
            raise ValueError(f"MODEL.IAI.ID_DECODER must be one of {cls.ID_DECODERS} for IAICondInst, got {iai.ID_DECODER!r}")
        ret = super().from_config(cfg)
        backbone = ret["backbone"]
        return {
            **ret,
            "video": video_config(cfg, backbone, cfg.MODEL.FCOS.NUM_CLASSES),
            "max_per_frame": iai.INFERENCE.MAX_PER_FRAME,
            "id_loss_weight": iai.ID_LOSS_WEIGHT,
            "id_focal_alpha": iai.ID_FOCAL_ALPHA,
            "id_focal_gamma": iai.ID_FOCAL_GAMMA,
        }

    # ------------------------------------------------------------------ detector hooks
    def _frame_detector_losses(
        self, images: ImageList, features: Dict[str, torch.Tensor], targets: List[Instances]
    ) -> Dict[str, torch.Tensor]:
        return self.losses(images, targets, *self._head_outputs(features))

    def _frame_detections(
        self, images: ImageList, features: Dict[str, torch.Tensor], first_frame: bool, height: int, width: int
    ) -> Instances:
        result = self.inference(images, *self._head_outputs(features))[0]
        return self.postprocess(result, height, width)

    def _detector_id_probs(self, frame: Dict, masks: torch.Tensor) -> torch.Tensor:
        """
        The FCOS ID branch's sigmoids on the first head level (P3), averaged over the level's
        locations inside each mask (uniform for a mask covering none), background 0.
        """
        outputs = self._head_outputs(frame["features"])
        locations, id_logits = outputs[0][0], outputs[6][0]  # (HW, 2) xy, (1, N, h, w)
        probs = id_logits[0].flatten(1).t().sigmoid()  # (HW, N)
        H, W = masks.shape[-2:]
        x = locations[:, 0].long().clamp(max=W - 1)
        y = locations[:, 1].long().clamp(max=H - 1)
        inside = masks[:, y, x].to(probs.dtype)  # (K, HW)
        count = inside.sum(1, keepdim=True)
        mean = inside @ probs / count.clamp(min=1)
        mean = torch.where(count > 0, mean, torch.full_like(mean, 1.0 / probs.shape[1]))
        return torch.cat([mean, mean.new_zeros((len(mean), 1))], dim=1)
