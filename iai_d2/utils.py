"""Small file utilities shared by the package."""

import logging
import os
import tempfile
import warnings

__all__ = ["atomic_write", "check_weights", "filter_library_warnings", "json_rle"]


def atomic_write(path: str, write_fn, mode: str = "wb") -> None:
    """
    Call ``write_fn(f)`` on a temporary file in the directory of ``path``, then rename it onto
    ``path``: readers see either the old file or the complete new one, never a truncated file.
    The file gets the permissions of a normally created file (0666 minus the umask).
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp_" + os.path.basename(path))
    try:
        with os.fdopen(fd, mode) as f:
            write_fn(f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def check_weights(weights: str) -> None:
    """Raise FileNotFoundError if ``weights`` (cfg.MODEL.WEIGHTS) is a local path that does not
    exist; URLs (``detectron2://``, ``https://``) and the empty string (no weights) pass."""
    if weights and "://" not in weights and not os.path.isfile(weights):
        raise FileNotFoundError(f"MODEL.WEIGHTS {weights} does not exist")


def json_rle(rle):
    """A JSON-serialisable copy of a compressed RLE ({"size", "counts"}; bytes counts -> str),
    or None for None."""
    if rle is None:
        return None
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    return {"size": [int(s) for s in rle["size"]], "counts": counts}


def filter_library_warnings() -> None:
    """Silence the third-party deprecation notices every command would print several times
    (``torch.jit.script`` and ``torch.meshgrid`` inside Detectron2, its read-only mask arrays,
    torch.fx's ``is_fx_tracing`` log line). Call it at an entry point before importing Detectron2."""
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r"torch\.meshgrid", category=UserWarning)
    # Detectron2's resize of bitmasks goes through PIL (np.asarray gives a read-only array) and
    # then torch.from_numpy: harmless, the tensor is copied by torch.stack.
    warnings.filterwarnings("ignore", message=r"The given NumPy array is not writable", category=UserWarning)
    logging.getLogger("torch.fx._symbolic_trace").addFilter(
        lambda record: not record.getMessage().startswith("is_fx_tracing will return true")
    )
