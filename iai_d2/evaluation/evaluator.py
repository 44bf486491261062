"""Detectron2 ``DatasetEvaluator`` for YouTube-VIS style splits (local scoring + server submission)."""
import itertools
import json
import logging
import os
import zipfile
from collections import OrderedDict

from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager

from ..utils import atomic_write, json_rle
from .ytvis_eval import evaluate, load_ground_truth, load_results, per_category_table, summary_table

logger = logging.getLogger(__name__)


def write_submission(results, output_dir):
    """Write ``results.json`` and ``submission.zip`` (only member: results.json at its root).

    Both files are written atomically. Returns (json_path, zip_path).
    """
    os.makedirs(output_dir, exist_ok=True)
    data = json.dumps(results).encode("utf-8")
    json_path = os.path.join(output_dir, "results.json")
    zip_path = os.path.join(output_dir, "submission.zip")

    def write_zip(f):
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("results.json", data)

    atomic_write(json_path, lambda f: f.write(data))
    atomic_write(zip_path, write_zip)
    return json_path, zip_path


class YTVISEvaluator(DatasetEvaluator):
    """Collects per-video track predictions, writes a submission, and scores it when GT exists.

    ``process`` takes model outputs ``{"video_id", "length", "height", "width", "predictions":
    [{"score", "category_id" (contiguous), "segmentations": [RLE or None] * length}]}``.
    ``evaluate`` returns ``{"segm": {"AP", "AP50", ..., "AR100", "AP-<category>"...}}`` on the main
    process (percent; NaN where undefined), ``{}`` on other ranks or when the split has no GT.
    """

    def __init__(self, dataset_name, output_dir=None, distributed=True):
        """
        Args:
            dataset_name: a registered split; its metadata must define ``json_file`` and
                ``thing_dataset_id_to_contiguous_id``.
            output_dir: where results.json and submission.zip go (trainers pass
                OUTPUT_DIR/inference); None writes nothing.
            distributed: gather predictions from all ranks to rank 0.
        """
        meta = MetadataCatalog.get(dataset_name)
        self._json_file = getattr(meta, "json_file", None)
        mapping = getattr(meta, "thing_dataset_id_to_contiguous_id", None)
        if self._json_file is None or mapping is None:
            raise ValueError(f"metadata of dataset {dataset_name!r} needs json_file and "
                             "thing_dataset_id_to_contiguous_id")
        self._dataset_name = dataset_name
        self._contiguous_to_dataset = {int(v): int(k) for k, v in mapping.items()}
        self._output_dir = output_dir
        self._distributed = distributed
        self.reset()

    def reset(self):
        self._predictions = []

    @property
    def predictions(self):
        """The YTVIS result entries processed on this process so far (dataset category ids)."""
        return self._predictions

    def process(self, inputs, outputs):
        """Convert each video's predictions to YTVIS result entries with dataset category ids."""
        for inp, out in zip(inputs, outputs):
            video_id = int(out.get("video_id", inp["video_id"]))
            for pred in out["predictions"]:
                cat = int(pred["category_id"])
                if cat not in self._contiguous_to_dataset:
                    raise ValueError(f"video {video_id}: predicted category {cat} is not a "
                                     f"contiguous id of {self._dataset_name}")
                self._predictions.append({
                    "video_id": video_id,
                    "score": float(pred["score"]),
                    "category_id": self._contiguous_to_dataset[cat],
                    "segmentations": [json_rle(s) for s in pred["segmentations"]],
                })

    def evaluate(self):
        """Gather, validate, write the submission, and score locally if the split has GT."""
        predictions = self._predictions
        if self._distributed:
            comm.synchronize()
            predictions = list(itertools.chain(*comm.gather(predictions, dst=0)))
            if not comm.is_main_process():
                return {}
        gt = load_ground_truth(PathManager.get_local_path(self._json_file))
        tracks = load_results(predictions, gt)  # validates every entry before anything is written
        num_missing = len(gt.videos) - len({p["video_id"] for p in predictions})
        if num_missing:
            logger.warning(f"{num_missing} of {len(gt.videos)} videos of "
                           f"{self._dataset_name} have no prediction")
        if self._output_dir:
            paths = write_submission(predictions, self._output_dir)
            logger.info(f"Wrote {len(predictions)} predicted tracks to {paths[0]} and {paths[1]}")
        if not gt.has_annotations:
            logger.info(f"{self._dataset_name} has no ground-truth annotations; nothing scored "
                        "(submit submission.zip to the evaluation server)")
            return {}
        metrics = evaluate(gt, tracks)
        logger.info(f"YTVIS segm results on {self._dataset_name}:\n" + summary_table(metrics))
        logger.info("Per-category segm AP:\n" + per_category_table(metrics))
        segm = OrderedDict(metrics.summary)
        segm.update((f"AP-{name}", ap) for name, ap in metrics.per_category.items())
        return OrderedDict(segm=segm)
