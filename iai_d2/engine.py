"""Training engine: the IAI trainer (a DefaultTrainer), its optimizer, atomic checkpoints, loss plot."""

import logging
import os
import sys
import weakref
from collections.abc import Mapping
from typing import Set

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import MetadataCatalog
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, TrainerBase, create_ddp_model, hooks
from detectron2.evaluation import COCOEvaluator
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage
from detectron2.utils.logger import setup_logger

from . import modeling  # noqa: F401  (registers the IAI architecture for build_model)
from .config import merge_overrides
from .data import build_clip_train_loader, build_video_test_loader, resolve_ytvis_paths
from .evaluation import YTVISEvaluator
from .utils import atomic_write

__all__ = ["IAITrainer", "AtomicCheckpointer", "IdentityWarmup", "LossCurveHook", "available_cpus",
           "build_iai_optimizer", "console_without_tracebacks", "error_message", "identity_parameter_names",
           "is_video_split", "launch_or_exit"]

# Errors whose message names the culprit (bad data, config or weights, a diverging loss): the tools
# end with it as one line ``error: ...`` and exit code 1, from one process or from several.
ONE_LINE_ERRORS = (FileNotFoundError, ValueError, FloatingPointError)


class AtomicCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer whose checkpoint and ``last_checkpoint`` files are written atomically,
    so an interrupted save never leaves a truncated ``model_*.pth`` behind; a file that is not a
    readable checkpoint is a one-line ValueError naming it."""

    def _load_file(self, filename: str):
        try:
            data = super()._load_file(filename)
        except Exception as e:  # pickle / zip / torch errors of a corrupt or foreign file
            raise ValueError(f"{filename} is not a readable checkpoint (truncated, or not a .pth/.pkl "
                             f"model file): {type(e).__name__}: {' '.join(str(e).split())}") from None
        if not isinstance(data, Mapping) or not isinstance(data.get("model"), Mapping):
            raise ValueError(f"{filename} is not a model checkpoint (no 'model' state dict)")
        return data

    def remove_stale_temporaries(self) -> None:
        """Delete temporary files of saves killed midway (``.tmp_model_*``, ``.tmp_last_checkpoint*``)."""
        if not self.save_dir or not self.save_to_disk or not os.path.isdir(self.save_dir):
            return
        for name in os.listdir(self.save_dir):
            if name.startswith((".tmp_model_", ".tmp_last_checkpoint")):
                self.logger.info(f"Removing {name}, left by an interrupted checkpoint save")
                os.remove(os.path.join(self.save_dir, name))

    def save(self, name: str, **kwargs) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        save_file = os.path.join(self.save_dir, f"{name}.pth")
        self.logger.info(f"Saving checkpoint to {save_file}")
        atomic_write(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(os.path.basename(save_file))

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        path = os.path.join(self.save_dir, "last_checkpoint")
        atomic_write(path, lambda f: f.write(last_filename_basename), mode="w")


def identity_parameter_names(model: torch.nn.Module) -> Set[str]:
    """Names of the parameters of the identity pathway that an IAI model adds to its image model:
    those under one of its ``IDENTITY_MODULES`` (a ValueError for a model that names none)."""
    model = getattr(model, "module", model)  # DDP
    prefixes = getattr(model, "IDENTITY_MODULES", ())
    names = {n for n, _ in model.named_parameters() if any(n.startswith(p + ".") for p in prefixes)}
    if not names:
        raise ValueError(
            f"SOLVER.IMAGE_MODEL_MULTIPLIER and SOLVER.IDENTITY_WARMUP_ITERS need an IAI model with an "
            f"identity pathway (IDENTITY_MODULES); {type(model).__name__} has none"
        )
    return names


def build_iai_optimizer(cfg, model: torch.nn.Module) -> torch.optim.Optimizer:
    """AdamW (or SGD) with ``SOLVER.BACKBONE_MULTIPLIER`` on the pretrained ResNet
    (``backbone.bottom_up.*``), ``SOLVER.IMAGE_MODEL_MULTIPLIER`` on every parameter outside the
    identity pathway, and Detectron2's optional gradient clipping. With
    ``SOLVER.IDENTITY_WARMUP_ITERS`` every param group has an ``identity`` flag (whether its
    parameters are the identity pathway's), which :class:`IdentityWarmup` reads."""
    solver = cfg.SOLVER
    if solver.IMAGE_MODEL_MULTIPLIER < 0 or solver.IDENTITY_WARMUP_ITERS < 0:
        raise ValueError(
            f"SOLVER.IMAGE_MODEL_MULTIPLIER and SOLVER.IDENTITY_WARMUP_ITERS must be >= 0, got "
            f"{solver.IMAGE_MODEL_MULTIPLIER} and {solver.IDENTITY_WARMUP_ITERS}"
        )
    split = solver.IMAGE_MODEL_MULTIPLIER != 1.0 or solver.IDENTITY_WARMUP_ITERS > 0
    identity = identity_parameter_names(model) if split else set()

    def lr_factor(name: str) -> float:
        factor = solver.BACKBONE_MULTIPLIER if name.startswith("backbone.bottom_up.") else 1.0
        return factor * (1.0 if name in identity else solver.IMAGE_MODEL_MULTIPLIER)

    params = get_default_optimizer_params(
        model,
        base_lr=solver.BASE_LR,
        weight_decay=solver.WEIGHT_DECAY,
        weight_decay_norm=solver.WEIGHT_DECAY_NORM,
        lr_factor_func=lr_factor,
    )
    if solver.IDENTITY_WARMUP_ITERS > 0:  # groups of equal hyperparameters may mix both kinds
        is_identity = {p: n in identity for n, p in model.named_parameters()}
        groups = []
        for group in params:
            for flag in (True, False):
                kept = [p for p in group["params"] if is_identity[p] == flag]
                if kept:
                    groups.append({**group, "params": kept, "identity": flag})
        params = groups
    name = cfg.SOLVER.OPTIMIZER.upper()
    if name == "ADAMW":
        optimizer = torch.optim.AdamW(params, lr=cfg.SOLVER.BASE_LR, weight_decay=cfg.SOLVER.WEIGHT_DECAY)
    elif name == "SGD":
        optimizer = torch.optim.SGD(params, lr=cfg.SOLVER.BASE_LR, momentum=cfg.SOLVER.MOMENTUM)
    else:
        raise ValueError(f"SOLVER.OPTIMIZER must be ADAMW or SGD, got {cfg.SOLVER.OPTIMIZER!r}")
    return maybe_add_gradient_clipping(cfg, optimizer)


class IdentityWarmup(hooks.HookBase):
    """
    SOLVER.IDENTITY_WARMUP_ITERS: for the first ``iters`` iterations the image model's param groups
    (``identity`` False, see :func:`build_iai_optimizer`) get learning rate 0, so only the identity
    pathway learns; Detectron2's LR scheduler sets every group's rate from its base rate after
    each step, so the image model trains normally from iteration ``iters`` on.
    """

    def __init__(self, iters: int):
        self.iters = iters

    def before_step(self):
        if self.trainer.iter < self.iters:
            for group in self.trainer.optimizer.param_groups:
                if not group["identity"]:
                    group["lr"] = 0.0


class LossCurveHook(hooks.HookBase):
    """At the end of training, plot the total loss of every logged iteration to ``loss_curve.png``."""

    def __init__(self, output_dir: str):
        self.output_dir = output_dir

    def after_train(self):
        # after_train also runs when training failed: then there may be no history, and raising
        # here would hide the real error.
        storage = get_event_storage()
        if "total_loss" not in storage.histories():
            return
        history = storage.history("total_loss").values()
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        iters = [it for _, it in history]
        values = [v for v, _ in history]
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(iters, values, linewidth=1)
        ax.set_xlabel("iteration")
        ax.set_ylabel("total loss")
        ax.set_title("IAI training loss")
        fig.tight_layout()
        atomic_write(os.path.join(self.output_dir, "loss_curve.png"), lambda f: fig.savefig(f, format="png"))
        plt.close(fig)


def is_video_split(names) -> bool:
    """True if the registered dataset(s) ``names`` (str or list) are YouTube-VIS-format video splits
    (clip / video loaders, YTVIS evaluator), False if they are image datasets (Detectron2's
    standard loaders and COCOEvaluator). Mixing both kinds is an error."""
    names = [names] if isinstance(names, str) else list(names)
    kinds = {MetadataCatalog.get(n).get("evaluator_type") == "ytvis" for n in names}
    if len(kinds) != 1:
        raise ValueError(f"datasets {names} mix video splits and image datasets")
    return kinds.pop()


class IAITrainer(DefaultTrainer):
    """DefaultTrainer for IAI: clip train loader, per-video test loader, YTVIS evaluator, AdamW with a
    backbone multiplier, device-aware DDP (gloo on CPU), atomic checkpoints and a loss plot."""

    def __init__(self, cfg):
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        on_cuda = next(model.parameters()).device.type == "cuda"
        model = create_ddp_model(
            model,
            broadcast_buffers=False,
            find_unused_parameters=True,
            device_ids=[comm.get_local_rank()] if on_cuda else None,
        )
        self._trainer = (AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer)(
            model, data_loader, optimizer
        )
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = AtomicCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def build_hooks(self):
        ret = super().build_hooks()
        if self.cfg.SOLVER.IDENTITY_WARMUP_ITERS > 0:
            ret.insert(0, IdentityWarmup(self.cfg.SOLVER.IDENTITY_WARMUP_ITERS))
        if comm.is_main_process():
            ret.append(LossCurveHook(self.cfg.OUTPUT_DIR))
        return ret

    def resume_or_load(self, resume=True):
        if comm.is_main_process():
            self.checkpointer.remove_stale_temporaries()
        super().resume_or_load(resume=resume)

    @classmethod
    def build_train_loader(cls, cfg):
        world = comm.get_world_size()
        if cfg.SOLVER.IMS_PER_BATCH < 1 or cfg.SOLVER.IMS_PER_BATCH % world:
            raise ValueError(f"SOLVER.IMS_PER_BATCH (clips per iteration, all processes) must be a positive "
                             f"multiple of the {world} process(es), got {cfg.SOLVER.IMS_PER_BATCH}")
        if not is_video_split(cfg.DATASETS.TRAIN):  # frames as images: the image-model stage
            return super().build_train_loader(cfg)
        return build_clip_train_loader(cfg)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        if not is_video_split(dataset_name):
            return super().build_test_loader(cfg, dataset_name)
        return build_video_test_loader(cfg, dataset_name)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference")
        if not is_video_split(dataset_name):
            # Tasks from the config, not from the predictions: a model that detects nothing yet
            # still reports segm (as NaN) instead of silently only bbox.
            tasks = ("bbox", "segm") if cfg.MODEL.MASK_ON else ("bbox",)
            return COCOEvaluator(dataset_name, tasks=tasks, output_dir=output_folder)
        if not hasattr(MetadataCatalog.get(dataset_name), "json_file"):
            resolve_ytvis_paths(dataset_name)  # built-in splits pick their layout on first use
        return YTVISEvaluator(dataset_name, output_dir=output_folder)

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_iai_optimizer(cfg, model)


def setup_cfg(args, add_config):
    """
    The frozen config of a ``train_net.py``-style command (``default_argument_parser`` args):
    ``add_config(cfg)`` adds the model's keys, then the file and the overrides (a bad override is
    a one-line ValueError), progress bars only on a terminal, Detectron2's ``default_setup``, and
    the ``iai_d2`` logger (AP table, written files) to the console and log.txt; logged tracebacks
    go to log.txt only (``console_without_tracebacks``).
    """
    from detectron2.config import get_cfg
    from detectron2.engine import default_setup

    cfg = get_cfg()
    add_config(cfg)
    cfg.merge_from_file(args.config_file)
    merge_overrides(cfg, args.opts)
    if not sys.stderr.isatty():
        cfg.TEST.PROGRESS_BAR = False  # progress bars belong on a terminal, not in a log file
    requested_workers, cores = cfg.DATALOADER.NUM_WORKERS, available_cpus()
    # More workers than cores only thrash (and torch warns once per loader): use what there is.
    cfg.DATALOADER.NUM_WORKERS = min(requested_workers, cores)
    cfg.freeze()
    default_setup(cfg, args)
    logger = setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="iai_d2", abbrev_name="iai")
    if requested_workers > cores:
        logger.info(f"DATALOADER.NUM_WORKERS {requested_workers} > the {cores} CPU cores this process may use: "
                    f"using {cores}")
    console_without_tracebacks()
    return cfg


def available_cpus() -> int:
    """CPU cores this process may run on (its affinity mask, as torch's DataLoader counts them)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def train_or_evaluate(cfg, args, trainer_cls=None):
    """
    ``--eval-only``: load MODEL.WEIGHTS (or the last checkpoint with ``--resume``) and test;
    otherwise train with ``trainer_cls`` (default :class:`IAITrainer`), resuming if asked.
    MODEL.WEIGHTS is checked first unless ``--resume`` finds a checkpoint in OUTPUT_DIR.
    """
    from detectron2.evaluation import verify_results

    from .utils import check_weights

    trainer_cls = trainer_cls or IAITrainer
    resuming = args.resume and os.path.isfile(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint"))
    if not resuming:
        check_weights(cfg.MODEL.WEIGHTS)
    if args.eval_only:
        model = trainer_cls.build_model(cfg)
        AtomicCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        results = trainer_cls.test(cfg, model)
        if comm.is_main_process() and results:
            verify_results(cfg, results)
        return results
    trainer = trainer_cls(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


class WorkerError(Exception):
    """One of ONE_LINE_ERRORS raised in a launched process, its message made one line."""


def error_message(error):
    """The message of ``error`` on one line. A DataLoader worker's error, which torch re-raises in
    the main process as "Caught X in DataLoader worker process N.\nOriginal Traceback ...", gives
    back the original message (the traceback's last line, less the exception type)."""
    text = str(error)
    if text.startswith("Caught ") and "\nOriginal Traceback" in text:
        kind, sep, message = text.rstrip().splitlines()[-1].partition(": ")
        if sep and " " not in kind:
            text = message
    return " ".join(text.split())


class _WithoutTraceback(logging.Formatter):
    """Console formatter: what the wrapped formatter writes, less the exception traceback and stack
    of the record (the log file's handler still gets them)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def format(self, record):
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info = record.exc_text = record.stack_info = None
        try:
            return self.inner.format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


def console_without_tracebacks(logger_names=("detectron2", "fvcore", "iai_d2")):
    """Tracebacks logged by these loggers (e.g. Detectron2's "Exception during training:") go to
    their log files only: their console handlers (streams stdout / stderr) write the message line."""
    for name in logger_names:
        for handler in logging.getLogger(name).handlers:
            if (isinstance(handler, logging.StreamHandler) and handler.stream in (sys.stdout, sys.stderr)
                    and not isinstance(handler.formatter, _WithoutTraceback)):
                handler.setFormatter(_WithoutTraceback(handler.formatter or logging.Formatter()))


def _run_worker(main_func, *args):
    """Body of every launched process. torch.multiprocessing hands a worker's failure to the parent
    only as the traceback text, whose last line is then ``iai_d2.engine.WorkerError: <message>``.
    The traceback goes to the ``iai_d2`` log file (when set up), not to the console."""
    try:
        return main_func(*args)
    except ONE_LINE_ERRORS as e:
        message = error_message(e)
        logger = logging.getLogger("iai_d2")
        if logger.handlers:
            logger.error(f"Stopped (traceback in the log file): {message}", exc_info=e)
        raise WorkerError(message) from None


def parse_launch_args(argv=None):
    """Detectron2's ``default_argument_parser`` arguments with the usage errors a user meets first
    (no or a missing ``--config-file``, ``--num-gpus`` / ``--num-machines`` < 1) reported by argparse
    before any process starts; prints the arguments as Detectron2's tools do."""
    from detectron2.engine import default_argument_parser

    parser = default_argument_parser()
    args = parser.parse_args(argv)
    if not args.config_file:
        parser.error("--config-file is required")
    if not os.path.isfile(args.config_file):
        parser.error(f"--config-file {args.config_file} does not exist")
    if args.num_gpus < 1 or args.num_machines < 1:
        parser.error("--num-gpus and --num-machines must be >= 1")
    print("Command Line Args:", args)
    return args


def launch_or_exit(main_func, args):
    """Detectron2's ``launch(main_func, ...)`` with the launcher arguments of ``args``
    (``default_argument_parser``); a bad-input error in this process or in any of the ``--num-gpus``
    workers ends the program with one line ``error: ...`` and exit code 1 (not the worker's
    traceback). Other errors propagate unchanged."""
    from detectron2.engine import launch
    from torch.multiprocessing.spawn import ProcessRaisedException

    try:
        launch(_run_worker, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
               dist_url=args.dist_url, args=(main_func, args))
    except WorkerError as e:  # one process: raised right here
        sys.exit(f"error: {e}")
    except ProcessRaisedException as e:
        marker = f"{WorkerError.__module__}.{WorkerError.__qualname__}: "
        lines = str(e).strip().splitlines()
        if lines and lines[-1].startswith(marker):
            sys.exit(f"error: {lines[-1][len(marker):]}")
        raise
    except ONE_LINE_ERRORS as e:  # raised by the launcher itself
        sys.exit(f"error: {error_message(e)}")
