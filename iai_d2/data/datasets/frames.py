"""Video splits seen as image datasets: every annotated frame of a YouTube-VIS-format split becomes
one Detectron2 image record, for training and evaluating a plain image model (Mask R-CNN) on the
frames of the videos (the image-model stage IAI fine-tunes from).

Built-in names: ``synthetic_vis_{train,val}_frames`` (frames of ``synthetic_vis_{train,val}``),
``ytvis_2019_train_frames``, ``ytvis_2021_train_frames``, ``ovis_train_frames`` (the image-model
stage of a query-matching or IoU-linking baseline on the real data).
"""
from detectron2.data import DatasetCatalog, MetadataCatalog

__all__ = ["register_ytvis_frames", "ytvis_frame_records"]

BUILTIN_FRAME_SPLITS = ("synthetic_vis_train", "synthetic_vis_val", "ytvis_2019_train", "ytvis_2021_train", "ovis_train")


def ytvis_frame_records(video_records, video_dataset_name):
    """
    Args:
        video_records (list[dict]): records of ``load_ytvis_json`` (with "annotations").
        video_dataset_name (str): for error messages.
    Returns:
        list[dict]: one standard Detectron2 record per frame: file_name, height, width, image_id
        (running index), video_id, frame_idx, annotations (the frame's instances, "id" = track).
    """
    frames = []
    for video in video_records:
        if "annotations" not in video:
            raise ValueError(
                f"{video_dataset_name}: video id {video['video_id']} has no annotations; only "
                "annotated splits can be used as image datasets"
            )
        for frame_idx, (file_name, annos) in enumerate(zip(video["file_names"], video["annotations"])):
            frames.append({
                "file_name": file_name,
                "height": video["height"],
                "width": video["width"],
                "image_id": len(frames),
                "video_id": video["video_id"],
                "frame_idx": frame_idx,
                "annotations": annos,
            })
    return frames


def register_ytvis_frames(name, video_dataset_name):
    """Register ``name`` as the frames of the registered video split ``video_dataset_name``
    (loaded lazily; category metadata copied, ``evaluator_type="coco"``)."""
    DatasetCatalog.register(
        name, lambda: ytvis_frame_records(DatasetCatalog.get(video_dataset_name), video_dataset_name)
    )
    video_meta = MetadataCatalog.get(video_dataset_name)
    MetadataCatalog.get(name).set(
        thing_classes=video_meta.thing_classes,
        thing_colors=video_meta.thing_colors,
        thing_dataset_id_to_contiguous_id=video_meta.thing_dataset_id_to_contiguous_id,
        evaluator_type="coco",
    )


for _video_name in BUILTIN_FRAME_SPLITS:
    register_ytvis_frames(f"{_video_name}_frames", _video_name)
