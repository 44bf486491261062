"""CondInst (Tian et al., "Conditional Convolutions for Instance Segmentation") as a Detectron2
meta-architecture: FCOS detections whose dynamic mask heads segment each instance."""

from typing import Dict, List

import torch
import torch.distributed as dist
from detectron2.config import configurable
from detectron2.layers import batched_nms, cat
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, build_backbone, detector_postprocess
from detectron2.structures import BitMasks, Boxes, ImageList, Instances, PolygonMasks
from detectron2.utils import comm
from fvcore.nn import giou_loss, sigmoid_focal_loss_jit
from torch import nn
from torch.nn import functional as F

from .dynamic_mask_head import DynamicMaskHead, dice_loss
from .fcos_head import FCOSHead
from .mask_branch import MaskBranch
from .targets import assign_fcos_targets, centerness_targets, level_size_ranges, mask_centroids
from .utils import compute_locations

__all__ = ["CondInst"]


def _reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean of a scalar tensor over the processes (itself when not distributed)."""
    world = comm.get_world_size()
    if world == 1:
        return value
    value = value.clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / world


def _flatten(per_level: List[torch.Tensor]) -> torch.Tensor:
    """Per level (N, C, Hl, Wl) -> (N, sum Hl * Wl, C), levels in order, cells row-major."""
    return cat([x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, x.shape[1]) for x in per_level], dim=1)


@META_ARCH_REGISTRY.register()
class CondInst(nn.Module):
    """
    Backbone (FPN P3-P7) -> FCOSHead (classes, boxes, centre-ness, controller) + MaskBranch (P3-P5
    -> 8 channels at stride 8) -> DynamicMaskHead per detection. Training returns the losses
    ``loss_fcos_cls``, ``loss_fcos_loc``, ``loss_fcos_ctr``, ``loss_mask``; inference returns
    ``[{"instances": Instances}]`` as GeneralizedRCNN (pred_boxes, scores, pred_classes,
    pred_masks bool (R, H, W)) at each input's "height" x "width".
    """

    @configurable
    def __init__(self, *, backbone: Backbone, head: FCOSHead, mask_branch: MaskBranch,
                 mask_head: DynamicMaskHead, in_features: List[str], num_classes: int,
                 sizes_of_interest: List[float], center_sampling_radius: float, focal_alpha: float,
                 focal_gamma: float, max_proposals_per_image: int, mask_loss_weight: float,
                 score_thresh: float, pre_nms_topk: int, nms_thresh: float, detections_per_image: int,
                 mask_threshold: float, pixel_mean, pixel_std, id_loss_weight: float = 1.0,
                 id_focal_alpha: float = 0.25, id_focal_gamma: float = 2.0):
        """
        id_loss_weight, id_focal_alpha, id_focal_gamma: the sigmoid focal ID loss of the head's ID
        branch (only with one, see :class:`IAICondInst`).
        """
        super().__init__()
        self.backbone, self.head, self.mask_branch, self.mask_head = backbone, head, mask_branch, mask_head
        self.in_features = list(in_features)
        shapes = backbone.output_shape()
        self.strides = [shapes[f].stride for f in self.in_features]
        self.num_classes = num_classes
        self.size_ranges = level_size_ranges(sizes_of_interest)
        if len(self.size_ranges) != len(self.in_features):
            raise ValueError(f"MODEL.FCOS.SIZES_OF_INTEREST needs {len(self.in_features) - 1} values for "
                             f"{len(self.in_features)} levels, got {list(sizes_of_interest)}")
        # Relative coordinates of a level's instances are divided by the level's upper size bound.
        self.coord_norms = [float(s) for s in sizes_of_interest] + [float(sizes_of_interest[-1]) * 2]
        self.center_sampling_radius = center_sampling_radius
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma
        self.max_proposals_per_image = max_proposals_per_image
        self.mask_loss_weight = mask_loss_weight
        self.score_thresh, self.pre_nms_topk, self.nms_thresh = score_thresh, pre_nms_topk, nms_thresh
        self.detections_per_image, self.mask_threshold = detections_per_image, mask_threshold
        self.id_loss_weight, self.id_focal_alpha, self.id_focal_gamma = id_loss_weight, id_focal_alpha, id_focal_gamma
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @classmethod
    def from_config(cls, cfg):
        backbone = build_backbone(cfg)
        shapes = backbone.output_shape()
        fcos, ci = cfg.MODEL.FCOS, cfg.MODEL.CONDINST
        mask_branch = MaskBranch(
            shapes, ci.MASK_BRANCH.IN_FEATURES, ci.MASK_BRANCH.CHANNELS, ci.MASK_BRANCH.NUM_CONVS,
            ci.MASK_BRANCH.OUT_CHANNELS, ci.MASK_BRANCH.NORM, ci.MASK_BRANCH.UPSAMPLE,
        )
        mask_head = DynamicMaskHead(
            ci.MASK_BRANCH.OUT_CHANNELS, ci.MASK_HEAD.CHANNELS, ci.MASK_HEAD.NUM_LAYERS,
            feat_stride=mask_branch.out_stride, out_stride=ci.MASK_OUT_STRIDE,
        )
        head = FCOSHead(
            [shapes[f] for f in fcos.IN_FEATURES], fcos.NUM_CLASSES, fcos.NUM_CONVS, fcos.NORM,
            fcos.PRIOR_PROB, mask_head.num_params, num_ids=cls._head_num_ids(cfg),
        )
        return {
            "backbone": backbone, "head": head, "mask_branch": mask_branch, "mask_head": mask_head,
            "in_features": fcos.IN_FEATURES, "num_classes": fcos.NUM_CLASSES,
            "sizes_of_interest": fcos.SIZES_OF_INTEREST,
            "center_sampling_radius": fcos.CENTER_SAMPLING_RADIUS,
            "focal_alpha": fcos.LOSS_ALPHA, "focal_gamma": fcos.LOSS_GAMMA,
            "max_proposals_per_image": ci.MAX_PROPOSALS_PER_IMAGE,
            "mask_loss_weight": ci.MASK_LOSS_WEIGHT,
            "score_thresh": fcos.INFERENCE_TH_TEST, "pre_nms_topk": fcos.PRE_NMS_TOPK_TEST,
            "nms_thresh": fcos.NMS_TH_TEST, "detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "mask_threshold": ci.MASK_THRESHOLD,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN, "pixel_std": cfg.MODEL.PIXEL_STD,
        }

    @classmethod
    def _head_num_ids(cls, cfg) -> int:
        """Outputs of the FCOS head's ID branch (0: none)."""
        return 0

    @property
    def device(self):
        return self.pixel_mean.device

    # ------------------------------------------------------------------------------ forward
    def preprocess_image(self, batched_inputs: List[Dict]) -> ImageList:
        images = [(x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs]
        return ImageList.from_tensors(images, self.backbone.size_divisibility,
                                      padding_constraints=self.backbone.padding_constraints)

    def forward(self, batched_inputs: List[Dict]):
        """
        Args:
            batched_inputs: Detectron2 dicts with "image" (3, H, W); in training "instances"
                (gt_boxes, gt_classes, gt_masks); optionally "height", "width" of the output.
        """
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        locations, logits, bbox_reg, ctrness, params, mask_feats, id_logits = self._head_outputs(features)
        if self.training:
            gt = [x["instances"].to(self.device) for x in batched_inputs]
            return self.losses(images, gt, locations, logits, bbox_reg, ctrness, params, mask_feats, id_logits)
        results = self.inference(images, locations, logits, bbox_reg, ctrness, params, mask_feats, id_logits)
        processed = []
        for result, inputs, image_size in zip(results, batched_inputs, images.image_sizes):
            height = inputs.get("height", image_size[0])
            width = inputs.get("width", image_size[1])
            result.remove("class_probs")  # the image model's outputs are GeneralizedRCNN's
            processed.append({"instances": self.postprocess(result, height, width)})
        return processed

    def _head_outputs(self, features: Dict[str, torch.Tensor]):
        """
        FCOS head and mask branch on backbone features: locations (per level (HW, 2)), logits,
        bbox_reg, ctrness, params (per level), mask_feats, and the ID logits per level (None
        without an ID branch).
        """
        feats = [features[f] for f in self.in_features]
        outputs = self.head(feats)
        logits, bbox_reg, ctrness, params = outputs[:4]
        id_logits = outputs[4] if len(outputs) > 4 else None
        mask_feats = self.mask_branch(features)
        locations = [compute_locations(f.shape[-2], f.shape[-1], s, f.device) for f, s in zip(feats, self.strides)]
        return locations, logits, bbox_reg, ctrness, params, mask_feats, id_logits

    # ------------------------------------------------------------------------------ training
    def _gt_bitmasks(self, inst: Instances, padded_hw) -> torch.Tensor:
        """(G, Hp, Wp) float masks of an image's instances, zero-padded to the batch size."""
        masks = inst.gt_masks
        h, w = inst.image_size
        if isinstance(masks, PolygonMasks):
            masks = BitMasks.from_polygon_masks(masks, h, w)
        m = masks.tensor.float() if isinstance(masks, BitMasks) else masks.float()
        return F.pad(m, (0, padded_hw[1] - m.shape[-1], 0, padded_hw[0] - m.shape[-2]))

    def _location_tensors(self, locations: List[torch.Tensor]):
        """The locations of all levels, flattened (L, 2), and per location its level's stride (L,),
        size range (L, 2) and relative-coordinate norm (L,)."""
        device = self.device
        all_locs = cat(locations, dim=0)
        level = cat([torch.full((len(l),), i, device=device, dtype=torch.long) for i, l in enumerate(locations)])
        strides = torch.tensor(self.strides, device=device, dtype=torch.float32)[level]
        ranges = torch.tensor(self.size_ranges, device=device, dtype=torch.float32)[level]
        coord_norms = torch.tensor(self.coord_norms, device=device, dtype=torch.float32)[level]
        return all_locs, strides, ranges, coord_norms

    def fcos_assignment(self, images: ImageList, gt_instances: List[Instances], locations: List[torch.Tensor]):
        """
        FCOS targets of the N images' locations (``locations``: per level (HW, 2)).

        Returns:
            matched (N, L): index of the GT instance each location is assigned to, -1 for none;
            ltrb (N, L, 4): distances to that instance's box; gt_masks: N (G, Hp, Wp) float masks
            padded to the batch.
        """
        all_locs, strides, ranges, _ = self._location_tensors(locations)
        padded_hw = images.tensor.shape[-2:]
        matched, ltrb, gt_masks = [], [], []
        for inst in gt_instances:
            masks = self._gt_bitmasks(inst, padded_hw)
            boxes = inst.gt_boxes.tensor
            m, t = assign_fcos_targets(all_locs, strides, ranges, boxes, mask_centroids(masks, boxes),
                                       self.center_sampling_radius)
            matched.append(m)
            ltrb.append(t)
            gt_masks.append(masks)
        return torch.stack(matched), torch.stack(ltrb), gt_masks

    def losses(self, images, gt_instances, locations, logits, bbox_reg, ctrness, params, mask_feats,
               id_logits=None):
        """Focal classification, GIoU boxes weighted by centre-ness, centre-ness BCE, Dice masks;
        with ``id_logits`` (the ID branch) and ``gt_ids`` (ID targets) on the GT instances, the
        sigmoid focal ID loss ``loss_id_fcos`` over the positive locations, each taking its
        assigned instance's ID target, normalised by the number of positives."""
        device = self.device
        all_locs, strides, _, coord_norms = self._location_tensors(locations)
        matched, ltrb, gt_masks = self.fcos_assignment(images, gt_instances, locations)
        labels, id_labels = [], []
        for inst, m in zip(gt_instances, matched):
            lab = torch.full_like(m, self.num_classes)
            lab[m >= 0] = inst.gt_classes[m[m >= 0]]
            labels.append(lab)
            if id_logits is not None:
                idl = torch.full_like(m, -1)
                idl[m >= 0] = inst.gt_ids[m[m >= 0]]
                id_labels.append(idl)
        labels = torch.stack(labels)  # (N, L)

        pred_logits = _flatten(logits)  # (N, L, K)
        pred_reg = _flatten(bbox_reg)  # (N, L, 4)
        pred_ctr = _flatten(ctrness)[..., 0]  # (N, L)
        pred_params = _flatten(params)  # (N, L, P)

        pos = matched >= 0
        num_pos = max(_reduce_mean(pos.sum().float()).item(), 1.0)
        cls_targets = F.one_hot(labels, self.num_classes + 1)[..., : self.num_classes].to(pred_logits.dtype)
        loss_cls = sigmoid_focal_loss_jit(pred_logits, cls_targets, alpha=self.focal_alpha,
                                          gamma=self.focal_gamma, reduction="sum") / num_pos

        n_idx, l_idx = pos.nonzero(as_tuple=True)
        if len(n_idx) > 0:
            tgt = ltrb[n_idx, l_idx]
            ctr_tgt = centerness_targets(tgt)
            pred = pred_reg[n_idx, l_idx] * strides[l_idx, None]
            # Boxes around the location (origin): GIoU only needs the four distances.
            to_box = torch.tensor([-1.0, -1.0, 1.0, 1.0], device=device)
            ctr_norm = max(_reduce_mean(ctr_tgt.sum()).item(), 1e-6)
            loss_loc = (giou_loss(pred * to_box, tgt * to_box, reduction="none") * ctr_tgt).sum() / ctr_norm
            loss_ctr = F.binary_cross_entropy_with_logits(pred_ctr[n_idx, l_idx], ctr_tgt, reduction="sum") / num_pos
        else:
            loss_loc = pred_reg.sum() * 0
            loss_ctr = pred_ctr.sum() * 0

        # Masks of at most max_proposals_per_image sampled positive locations per image.
        keep = []
        for n in range(len(gt_instances)):
            idx = (n_idx == n).nonzero(as_tuple=True)[0]
            if len(idx) > self.max_proposals_per_image:
                idx = idx[torch.randperm(len(idx), device=device)[: self.max_proposals_per_image]]
            keep.append(idx)
        keep = cat(keep) if keep else n_idx.new_zeros((0,))
        if len(keep) > 0:
            s_n, s_l = n_idx[keep], l_idx[keep]
            mask_logits = self.mask_head(mask_feats, s_n, all_locs[s_l], coord_norms[s_l], pred_params[s_n, s_l])
            targets = torch.stack([gt_masks[n][matched[n, l]] for n, l in zip(s_n.tolist(), s_l.tolist())])
            loss_mask = dice_loss(mask_logits[:, 0], targets).mean()
        else:
            loss_mask = mask_feats.sum() * 0 + pred_params.sum() * 0
        losses = {
            "loss_fcos_cls": loss_cls,
            "loss_fcos_loc": loss_loc,
            "loss_fcos_ctr": loss_ctr,
            "loss_mask": loss_mask * self.mask_loss_weight,
        }
        if id_logits is not None:
            pred_ids = _flatten(id_logits)  # (N, L, num_ids)
            if len(n_idx) > 0:
                id_tgt = F.one_hot(torch.stack(id_labels)[n_idx, l_idx], pred_ids.shape[-1]).to(pred_ids.dtype)
                loss_id = sigmoid_focal_loss_jit(pred_ids[n_idx, l_idx], id_tgt, alpha=self.id_focal_alpha,
                                                 gamma=self.id_focal_gamma, reduction="sum") / num_pos
            else:
                loss_id = pred_ids.sum() * 0
            losses["loss_id_fcos"] = loss_id * self.id_loss_weight
        return losses

    # ------------------------------------------------------------------------------ inference
    @torch.no_grad()
    def inference(self, images, locations, logits, bbox_reg, ctrness, params, mask_feats,
                  id_logits=None, embeddings=None) -> List[Instances]:
        """Per image: per-level threshold + top-k, score sqrt(cls * ctr), class-aware NMS, masks.
        Returns Instances at the network input size with ``mask_probs`` (R, h, w), ``class_probs``
        (R, K) (the class probabilities of each detection's location); with ``id_logits``,
        ``id_probs`` (R, num_ids + 1): the ID branch's sigmoids and 0 for background; with
        ``embeddings`` (per level (N, D, Hl, Wl)), ``embeddings`` (R, D) at each detection's location."""
        results = []
        for n, image_size in enumerate(images.image_sizes):
            boxes, scores, classes, locs, sizes, prm, cprobs, iprobs, embs = [], [], [], [], [], [], [], [], []
            for lvl, stride in enumerate(self.strides):
                prob = logits[lvl][n].sigmoid().flatten(1).t()  # (HW, K)
                ctr = ctrness[lvl][n, 0].sigmoid().flatten()  # (HW,)
                cand = prob > self.score_thresh
                combined = (prob * ctr[:, None])[cand]
                loc_idx, cls_idx = cand.nonzero(as_tuple=True)
                if len(combined) > self.pre_nms_topk:
                    combined, top = combined.topk(self.pre_nms_topk)
                    loc_idx, cls_idx = loc_idx[top], cls_idx[top]
                loc = locations[lvl][loc_idx]
                dist_ = bbox_reg[lvl][n].flatten(1).t()[loc_idx] * stride
                boxes.append(torch.cat((loc - dist_[:, :2], loc + dist_[:, 2:]), dim=1))
                scores.append(combined.sqrt())
                classes.append(cls_idx)
                locs.append(loc)
                sizes.append(torch.full_like(combined, self.coord_norms[lvl]))
                prm.append(params[lvl][n].flatten(1).t()[loc_idx])
                cprobs.append(prob[loc_idx])
                if id_logits is not None:
                    iprobs.append(id_logits[lvl][n].flatten(1).t()[loc_idx].sigmoid())
                if embeddings is not None:
                    embs.append(embeddings[lvl][n].flatten(1).t()[loc_idx])
            boxes, scores, classes = Boxes(cat(boxes)), cat(scores), cat(classes)
            boxes.clip(image_size)
            keep = batched_nms(boxes.tensor, scores, classes, self.nms_thresh)[: self.detections_per_image]
            result = Instances(image_size)
            result.pred_boxes = boxes[keep]
            result.scores = scores[keep]
            result.pred_classes = classes[keep]
            result.class_probs = cat(cprobs)[keep]
            if id_logits is not None:
                ip = cat(iprobs)[keep]
                result.id_probs = torch.cat([ip, ip.new_zeros((len(ip), 1))], dim=1)
            if embeddings is not None:
                result.embeddings = cat(embs)[keep]
            im_inds = torch.full((len(keep),), n, dtype=torch.long, device=self.device)
            mask_logits = self.mask_head(mask_feats, im_inds, cat(locs)[keep], cat(sizes)[keep], cat(prm)[keep])
            result.mask_probs = mask_logits[:, 0, : image_size[0], : image_size[1]].sigmoid()
            results.append(result)
        return results

    def postprocess(self, result: Instances, height: int, width: int) -> Instances:
        """Boxes rescaled by ``detector_postprocess``, full-image masks resized and binarised."""
        result = detector_postprocess(result, height, width)
        probs = result.mask_probs
        if len(probs) > 0:
            probs = F.interpolate(probs[:, None], size=(height, width), mode="bilinear", align_corners=False)[:, 0]
        else:
            probs = probs.new_zeros((0, height, width))
        result.remove("mask_probs")
        result.pred_masks = probs > self.mask_threshold
        return result
