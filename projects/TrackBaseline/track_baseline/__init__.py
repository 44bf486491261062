"""Tracking-by-detection baseline (MaskTrack R-CNN-style) on iai_d2's Mask R-CNN and on CondInst:
importing this package registers TrackROIHeads and the TrackRCNN and TrackCondInst
meta-architectures (and, through projects/CondInst's ``condinst``, CondInst's)."""
import os
import sys

# TrackCondInst builds on projects/CondInst's condinst package, found as the scripts find it.
_CONDINST = os.path.realpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "CondInst"))
if _CONDINST not in sys.path:
    sys.path.insert(0, _CONDINST)

from .condinst_track import TrackCondInst, TrackEmbedHead  # noqa: E402
from .config import add_trackbaseline_config  # noqa: E402
from .matching import TrackMemory, affinity_logits, assign_tracks, match_scores, track_loss  # noqa: E402
from .meta_arch import TrackRCNN  # noqa: E402
from .roi_heads import TrackROIHeads  # noqa: E402
from .video_model import TrackVideoModel, TrackVideoState, tracking_config  # noqa: E402

__all__ = [
    "add_trackbaseline_config",
    "TrackCondInst",
    "TrackEmbedHead",
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
