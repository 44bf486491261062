"""Tracking-by-detection baseline (MaskTrack R-CNN-style) on iai_d2's Mask R-CNN: importing this
package registers TrackROIHeads and the TrackRCNN meta-architecture."""
from .config import add_trackbaseline_config
from .matching import TrackMemory, affinity_logits, assign_tracks, match_scores
from .meta_arch import TrackRCNN, TrackVideoState
from .roi_heads import TrackROIHeads

__all__ = [
    "add_trackbaseline_config",
    "TrackMemory",
    "affinity_logits",
    "assign_tracks",
    "match_scores",
    "TrackRCNN",
    "TrackVideoState",
    "TrackROIHeads",
]
