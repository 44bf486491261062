"""Mask2Former (Cheng et al., "Masked-attention Mask Transformer for Universal Image
Segmentation") for instance segmentation as a Detectron2 meta-architecture."""
from typing import Dict, List

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, build_backbone
from detectron2.structures import BitMasks, ImageList, Instances, PolygonMasks
from torch import nn

from .criterion import SetCriterion
from .matcher import HungarianMatcher
from .pixel_decoder import build_pixel_decoder
from .transformer_decoder import MaskedTransformerDecoder

__all__ = ["Mask2Former"]


@META_ARCH_REGISTRY.register()
class Mask2Former(nn.Module):
    """
    Backbone (``build_backbone``: Detectron2's ResNet) -> pixel decoder (mask features at stride 4
    + 3 multi-scale maps) -> masked transformer decoder (queries -> class logits, mask logits,
    query embeddings). Training returns :class:`SetCriterion`'s losses; inference returns
    ``[{"instances": Instances}]`` as GeneralizedRCNN (pred_boxes from the masks, scores,
    pred_classes, pred_masks bool (R, H, W)) at each input's "height" x "width".

    The stages are methods on (ImageList, features) so that video models reuse them per frame:
    :meth:`predict` (head outputs), :meth:`losses`, :meth:`query_instances` (every query of one
    image as an Instances, with its embedding) and :meth:`instance_inference`.
    """

    @configurable
    def __init__(self, *, backbone: Backbone, pixel_decoder: nn.Module, transformer_decoder: MaskedTransformerDecoder,
                 criterion: SetCriterion, num_classes: int, size_divisibility: int, detections_per_image: int,
                 mask_threshold: float, pixel_mean, pixel_std):
        super().__init__()
        self.backbone, self.pixel_decoder, self.transformer_decoder = backbone, pixel_decoder, transformer_decoder
        self.criterion = criterion
        self.num_classes = num_classes
        self.size_divisibility = max(size_divisibility, backbone.size_divisibility)
        self.detections_per_image, self.mask_threshold = detections_per_image, mask_threshold
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @classmethod
    def from_config(cls, cfg):
        m = cfg.MODEL.MASK2FORMER
        backbone = build_backbone(cfg)
        pixel_decoder = build_pixel_decoder(cfg, backbone.output_shape())
        decoder = MaskedTransformerDecoder(
            in_channels=m.CONV_DIM, num_classes=m.NUM_CLASSES, hidden_dim=m.HIDDEN_DIM,
            num_queries=m.NUM_OBJECT_QUERIES, num_heads=m.NHEADS, dim_feedforward=m.DEC_DIM_FEEDFORWARD,
            dec_layers=m.DEC_LAYERS, mask_dim=m.MASK_DIM, num_feature_levels=pixel_decoder.num_feature_levels,
            position_cell_centres=m.POSITION_AT_CELL_CENTRES,
        )
        matcher = HungarianMatcher(m.CLASS_WEIGHT, m.MASK_WEIGHT, m.DICE_WEIGHT, m.TRAIN_NUM_POINTS)
        criterion = SetCriterion(
            num_classes=m.NUM_CLASSES, matcher=matcher, class_weight=m.CLASS_WEIGHT, mask_weight=m.MASK_WEIGHT,
            dice_weight=m.DICE_WEIGHT, no_object_weight=m.NO_OBJECT_WEIGHT, num_points=m.TRAIN_NUM_POINTS,
            oversample_ratio=m.OVERSAMPLE_RATIO, importance_sample_ratio=m.IMPORTANCE_SAMPLE_RATIO,
            deep_supervision=m.DEEP_SUPERVISION,
        )
        return {
            "backbone": backbone, "pixel_decoder": pixel_decoder, "transformer_decoder": decoder,
            "criterion": criterion, "num_classes": m.NUM_CLASSES, "size_divisibility": m.SIZE_DIVISIBILITY,
            "detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE, "mask_threshold": m.MASK_THRESHOLD,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN, "pixel_std": cfg.MODEL.PIXEL_STD,
        }

    @property
    def device(self):
        return self.pixel_mean.device

    def preprocess_image(self, batched_inputs: List[Dict]) -> ImageList:
        images = [(x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs]
        return ImageList.from_tensors(images, self.size_divisibility)

    def forward(self, batched_inputs: List[Dict]):
        """
        Args:
            batched_inputs: Detectron2 dicts with "image" (3, H, W); in training "instances"
                (gt_classes, gt_masks); optionally "height", "width" of the output.
        """
        images = self.preprocess_image(batched_inputs)
        outputs = self.predict(self.backbone(images.tensor))
        if self.training:
            return self.losses(images, outputs, [x["instances"].to(self.device) for x in batched_inputs])
        return [
            {"instances": self.instance_inference(outputs, b, image_size,
                                                  x.get("height", image_size[0]), x.get("width", image_size[1]))}
            for b, (x, image_size) in enumerate(zip(batched_inputs, images.image_sizes))
        ]

    def predict(self, features: Dict[str, torch.Tensor]) -> Dict:
        """Pixel decoder + transformer decoder on backbone features (see MaskedTransformerDecoder)."""
        mask_features, multi_scale = self.pixel_decoder(features)
        return self.transformer_decoder(multi_scale, mask_features)

    # ------------------------------------------------------------------------------ training
    def losses(self, images: ImageList, outputs: Dict, gt_instances: List[Instances]) -> Dict[str, torch.Tensor]:
        """The set losses of ``outputs`` against the GT instances (gt_classes, gt_masks)."""
        return self.criterion(outputs, self.set_targets(images, gt_instances))

    @staticmethod
    def set_targets(images: ImageList, gt_instances: List[Instances]) -> List[Dict]:
        """The criterion's targets: per image ``labels`` (T,) and ``masks`` (T, Hp, Wp) float, zero-padded."""
        padded = images.tensor.shape[-2:]
        targets = []
        for inst in gt_instances:
            masks = inst.gt_masks
            h, w = inst.image_size
            if isinstance(masks, PolygonMasks):
                masks = BitMasks.from_polygon_masks(masks, h, w)
            m = masks.tensor if isinstance(masks, BitMasks) else masks
            m = F.pad(m.float(), (0, padded[1] - m.shape[-1], 0, padded[0] - m.shape[-2]))
            targets.append({"labels": inst.gt_classes, "masks": m})
        return targets

    # ------------------------------------------------------------------------------ inference
    def _mask_probs(self, outputs: Dict, b: int, image_size, height: int, width: int) -> torch.Tensor:
        """(Q, height, width) mask probabilities of image b: upsampled to the padded input, cropped
        to the image, resized to the output size."""
        masks = outputs["pred_masks"][b : b + 1]
        stride = self.pixel_decoder.mask_stride
        masks = F.interpolate(masks, scale_factor=stride, mode="bilinear", align_corners=False)
        masks = masks[..., : image_size[0], : image_size[1]]
        return F.interpolate(masks, size=(height, width), mode="bilinear", align_corners=False)[0].sigmoid()

    def _instances(self, probs: torch.Tensor, classes: torch.Tensor, class_probs: torch.Tensor,
                   mask_probs: torch.Tensor, height: int, width: int) -> Instances:
        """Instances with pred_masks (bool), boxes from them, scores = class prob x mean mask prob inside."""
        binary = mask_probs > self.mask_threshold
        mask_scores = (mask_probs * binary).flatten(1).sum(1) / binary.flatten(1).sum(1).clamp(min=1)
        result = Instances((height, width))
        result.pred_masks = binary
        result.pred_boxes = BitMasks(binary).get_bounding_boxes().to(binary.device)
        result.scores = probs * mask_scores
        result.pred_classes = classes
        result.class_probs = class_probs
        return result

    def instance_inference(self, outputs: Dict, b: int, image_size, height: int, width: int) -> Instances:
        """The top TEST.DETECTIONS_PER_IMAGE (query, class) pairs of image b, score descending."""
        probs = outputs["pred_logits"][b].softmax(-1)[:, : self.num_classes]  # (Q, K)
        top, flat = probs.flatten().topk(min(self.detections_per_image, probs.numel()))
        queries = torch.div(flat, self.num_classes, rounding_mode="floor")
        mask_probs = self._mask_probs(outputs, b, image_size, height, width)[queries]
        result = self._instances(top, flat % self.num_classes, probs[queries], mask_probs, height, width)
        result.remove("class_probs")  # the image model's outputs are GeneralizedRCNN's
        return result[result.scores.argsort(descending=True)]

    def query_instances(self, outputs: Dict, b: int, image_size, height: int, width: int) -> Instances:
        """
        Every query of image b, in query order, at (height, width): pred_masks (Q, height, width)
        bool, pred_boxes, scores, pred_classes (best foreground class), class_probs (Q, K) and
        ``embeddings`` (Q, hidden_dim), the last decoder layer's normed query.
        """
        class_probs = outputs["pred_logits"][b].softmax(-1)[:, : self.num_classes]
        probs, classes = class_probs.max(-1)
        result = self._instances(probs, classes, class_probs, self._mask_probs(outputs, b, image_size, height, width),
                                 height, width)
        result.embeddings = outputs["pred_embeds"][b]
        return result
