"""
The query-matching baseline (MinVIS, Huang et al. 2022): Mask2Former trained on frames as images,
run online on videos. Every query of a frame is one detection; its embedding (the last decoder
layer's normed query, L2-normalised) is matched to the tracks' last embeddings by the Hungarian
algorithm on cosine similarity. Nothing is learned about identity.
"""
from typing import Dict

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import Instances
from scipy.optimize import linear_sum_assignment

from iai_d2.modeling.online import OnlineVideoModel, online_config

from .meta_arch import Mask2Former

__all__ = ["QueryMatchMask2Former", "QueryTracks"]


class QueryTracks:
    """
    The tracks of one video: each a track id and the L2-normalised embedding of its last detection.
    Detections are assigned to tracks one-to-one maximising the summed cosine similarity; a
    detection left over (more detections than tracks) starts a new track. With a fixed number of
    queries per frame (MinVIS), every query is matched from the second frame on, so the state holds
    exactly Q embeddings for any video length.
    """

    def __init__(self):
        self.embeddings = None  # (T, D)
        self.ids = torch.zeros(0, dtype=torch.long)
        self.next_id = 0

    def __len__(self) -> int:
        return len(self.ids)

    def update(self, embeddings: torch.Tensor) -> torch.Tensor:
        """
        Args:
            embeddings: (M, D) the frame's detection embeddings (any scale).
        Returns:
            (M,) long track ids (on the CPU).
        """
        emb = F.normalize(embeddings.detach().float(), dim=1)
        ids = torch.full((len(emb),), -1, dtype=torch.long)
        if self.embeddings is None:
            self.embeddings = emb.new_zeros((0, emb.shape[1]))
        if len(self) and len(emb):
            rows, cols = linear_sum_assignment((emb @ self.embeddings.t()).cpu().numpy(), maximize=True)
            rows, cols = torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)
            ids[rows] = self.ids[cols]
            self.embeddings[cols.to(emb.device)] = emb[rows.to(emb.device)]
        new = (ids < 0).nonzero().squeeze(1)
        ids[new] = torch.arange(self.next_id, self.next_id + len(new))
        self.next_id += len(new)
        self.ids = torch.cat([self.ids, ids[new]])
        self.embeddings = torch.cat([self.embeddings, emb[new.to(emb.device)]])
        return ids


@META_ARCH_REGISTRY.register()
class QueryMatchMask2Former(OnlineVideoModel, Mask2Former):
    """
    :class:`Mask2Former` (same parameters: image checkpoints load unchanged) that also runs online on
    videos (:class:`OnlineVideoModel`; the video test loader's records with lazily decoded
    ``frames``): per frame, all Q
    queries with their class probabilities, masks and embeddings; track ids from
    :class:`QueryTracks`; video-level predictions from ``iai_d2.inference.tracks.track_video``
    (a (track, class) pair scores its class probability averaged over the video's frames, as
    MinVIS). Training input: images, as Mask2Former. Masks are Mask2Former's own (MASK_THRESHOLD),
    not made disjoint.
    """

    TRAINS_ON_CLIPS = False

    @configurable
    def __init__(self, *, online: Dict, **kwargs):
        """
        Args:
            online: arguments of :meth:`OnlineVideoModel._setup_online` (see ``online_config``):
                video-level (track, class) selection, as every video model.
            kwargs: Mask2Former's arguments.
        """
        super().__init__(**kwargs)
        self._setup_online(**online)

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        ret["online"] = online_config(cfg, cfg.MODEL.IAI.INFERENCE, frame_masks=False)
        return ret

    def new_video_state(self) -> QueryTracks:
        """No tracks yet."""
        return QueryTracks()

    @torch.no_grad()
    def inference_frame(self, state: QueryTracks, image: torch.Tensor, height: int, width: int) -> Instances:
        """:meth:`OnlineVideoModel.inference_frame`: Instances of every query at (height, width) (see
        :meth:`Mask2Former.query_instances`) with ``ID`` (Q,) track ids."""
        images, features = self._single_frame(image)
        outputs = self.predict(features)
        detections = self.query_instances(outputs, 0, images.image_sizes[0], height, width)
        detections.ID = state.update(detections.embeddings).to(self.device)
        return detections
