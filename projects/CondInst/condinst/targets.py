"""FCOS target assignment as pure functions on tensors (no modules, no config)."""

from typing import List, Sequence

import torch

__all__ = ["assign_fcos_targets", "centerness_targets", "level_size_ranges", "mask_centroids"]


def level_size_ranges(sizes_of_interest: Sequence[float]) -> List[List[float]]:
    """[64, 128] -> [[-1, 64], [64, 128], [128, inf]]: one [lo, hi] range of max(l, t, r, b) per level."""
    bounds = [-1.0] + [float(s) for s in sizes_of_interest] + [float("inf")]
    return [[bounds[i], bounds[i + 1]] for i in range(len(bounds) - 1)]


def mask_centroids(masks: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """
    Args:
        masks: (G, H, W) bool/float, in image pixels; boxes: (G, 4) XYXY, used for empty masks.
    Returns:
        (G, 2) (x, y) centre of mass of each mask (pixel centres at +0.5), or the box centre.
    """
    boxes_centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    if masks.numel() == 0:
        return boxes_centre
    m = masks.float()
    h, w = m.shape[1:]
    xs = torch.arange(w, dtype=m.dtype, device=m.device) + 0.5
    ys = torch.arange(h, dtype=m.dtype, device=m.device) + 0.5
    area = m.sum(dim=(1, 2))
    cx = (m.sum(dim=1) * xs).sum(dim=1) / area.clamp(min=1e-6)
    cy = (m.sum(dim=2) * ys).sum(dim=1) / area.clamp(min=1e-6)
    centre = torch.stack((cx, cy), dim=1)
    return torch.where((area > 0)[:, None], centre, boxes_centre)


def assign_fcos_targets(locations: torch.Tensor, strides: torch.Tensor, size_ranges: torch.Tensor,
                        gt_boxes: torch.Tensor, gt_centers: torch.Tensor, radius: float):
    """
    FCOS assignment of the locations of all levels of one image to ground-truth boxes.

    A location is a candidate for a box if (a) it lies in the box and, when ``radius > 0``,
    strictly within ``radius * stride`` of the box's centre (``gt_centers``, the mask centroid)
    -- the sampling square clipped to the box -- and (b) ``max(l, t, r, b)`` is in the location's
    level range. Among several candidates the box of smallest area wins.

    Args:
        locations: (L, 2) (x, y); strides: (L,) stride of each location's level;
        size_ranges: (L, 2) [lo, hi] of each location's level;
        gt_boxes: (G, 4) XYXY; gt_centers: (G, 2) (x, y); radius: in strides.
    Returns:
        matched: (L,) long, index of the assigned box, -1 for background;
        ltrb: (L, 4) distances (pixels) to the assigned box's sides, 0 for background.
    """
    num_loc = locations.shape[0]
    if gt_boxes.shape[0] == 0:
        return (torch.full((num_loc,), -1, dtype=torch.long, device=locations.device),
                locations.new_zeros((num_loc, 4)))
    xs, ys = locations[:, 0:1], locations[:, 1:2]  # (L, 1)
    x0, y0, x1, y1 = gt_boxes.unbind(dim=1)  # (G,)
    ltrb = torch.stack((xs - x0, ys - y0, x1 - xs, y1 - ys), dim=2)  # (L, G, 4)

    if radius > 0:
        reach = strides[:, None].to(locations.dtype) * radius  # (L, 1)
        cx, cy = gt_centers[:, 0], gt_centers[:, 1]
        sx0 = torch.maximum(cx - reach, x0)
        sy0 = torch.maximum(cy - reach, y0)
        sx1 = torch.minimum(cx + reach, x1)
        sy1 = torch.minimum(cy + reach, y1)
        inside = (xs > sx0) & (ys > sy0) & (xs < sx1) & (ys < sy1)  # (L, G)
    else:
        inside = ltrb.min(dim=2).values > 0

    max_side = ltrb.max(dim=2).values
    in_range = (max_side >= size_ranges[:, 0:1]) & (max_side <= size_ranges[:, 1:2])

    areas = ((x1 - x0) * (y1 - y0))[None].expand(num_loc, -1).clone()
    areas[~(inside & in_range)] = float("inf")
    min_area, matched = areas.min(dim=1)
    matched[torch.isinf(min_area)] = -1

    ltrb = ltrb[torch.arange(num_loc, device=locations.device), matched.clamp(min=0)]
    ltrb[matched < 0] = 0
    return matched, ltrb


def centerness_targets(ltrb: torch.Tensor) -> torch.Tensor:
    """(P, 4) positive distances -> (P,) sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))."""
    lr, tb = ltrb[:, [0, 2]], ltrb[:, [1, 3]]
    ratio = (lr.min(dim=1).values / lr.max(dim=1).values) * (tb.min(dim=1).values / tb.max(dim=1).values)
    return torch.sqrt(ratio)
