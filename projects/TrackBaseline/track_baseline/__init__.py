"""Tracking-by-detection baseline (MaskTrack R-CNN-style) on iai_d2's Mask R-CNN: importing this
package registers TrackROIHeads and the TrackRCNN meta-architecture."""
from .config import add_trackbaseline_config
from .matching import TrackMemory, affinity_logits, assign_tracks, match_scores, track_loss
from .meta_arch import TrackRCNN
from .roi_heads import TrackROIHeads
from .video_model import TrackVideoModel, TrackVideoState, tracking_config

__all__ = [
    "add_trackbaseline_config",
    "TrackMemory",
    "affinity_logits",
    "assign_tracks",
    "match_scores",
    "track_loss",
    "TrackRCNN",
    "TrackVideoModel",
    "TrackVideoState",
    "TrackROIHeads",
    "tracking_config",
]
