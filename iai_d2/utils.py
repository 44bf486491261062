"""Small file utilities shared by the package."""

import logging
import os
import tempfile
import warnings

__all__ = ["atomic_write", "check_weights", "fetch_weights", "filter_library_warnings", "json_rle"]


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
    """
    Fail early, in one line, on MODEL.WEIGHTS that cannot be loaded: a local path that does not
    exist, or a URL (``detectron2://``, ``https://``) that cannot be fetched into Detectron2's
    download cache (no network, proxy, 404, truncated download). A fetched URL stays cached, so
    the checkpointer's later load of the same URL does not download again. "" (no weights) passes.
    """
    if not weights:
        return
    if "://" not in weights:
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"MODEL.WEIGHTS {weights} does not exist")
        return
    fetch_weights(weights)


# Seconds without a byte from the server before a download is given up (urllib has no timeout).
DOWNLOAD_TIMEOUT = 60


def fetch_weights(url: str) -> str:
    """
    The local path of checkpoint ``url`` in Detectron2's download cache, downloading it if needed.
    A download that fails is a FileNotFoundError naming the URL, the reason, and the two offline
    fixes: pass the file's local path as MODEL.WEIGHTS, or copy it to the cache path it names.
    """
    import socket
    from http.client import HTTPException
    from urllib.error import HTTPError
    from urllib.parse import urlparse

    from detectron2.utils.file_io import Detectron2Handler, PathManager
    from iopath.common.file_io import get_cache_dir

    url = urlparse(url)._replace(query="").geturl()  # Detectron2 drops "?matching_heuristics=..."
    http_url = url
    if url.startswith(Detectron2Handler.PREFIX):
        http_url = Detectron2Handler.S3_DETECTRON2_PREFIX + url[len(Detectron2Handler.PREFIX):]
    timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT)
    download_log = logging.getLogger("iopath.common.download")
    download_log.addFilter(_drop_failed_download)  # the error below says it, with the fix
    try:
        return PathManager.get_local_path(url)
    except (OSError, HTTPException, ValueError) as e:  # URLError, HTTPError, socket errors, short reads
        path = urlparse(http_url).path.lstrip("/")
        cached = os.path.join(get_cache_dir(), os.path.dirname(path), os.path.basename(path))
        # "HTTP Error 404: Not Found"; for other URLErrors the reason alone ("[Errno 111] Connection refused")
        reason = e if isinstance(e, HTTPError) else getattr(e, "reason", None) or e
        reason = " ".join(str(reason).split()) or type(e).__name__
        raise FileNotFoundError(
            f"MODEL.WEIGHTS {url} could not be downloaded ({type(e).__name__}: {reason}). Without "
            f"internet: download {http_url} on a machine that has it and pass the file's local path as "
            f"MODEL.WEIGHTS, or copy it to {cached} (Detectron2's download cache; $FVCORE_CACHE moves it)"
        ) from None
    finally:
        socket.setdefaulttimeout(timeout)
        download_log.removeFilter(_drop_failed_download)


def _drop_failed_download(record) -> bool:
    return not record.getMessage().startswith("Failed to download")


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
    """Silence the third-party notices every command would print, several times for some
    (``torch.jit.script`` and ``torch.meshgrid`` inside Detectron2, its read-only mask arrays,
    torch.fx's ``is_fx_tracing`` log line, cpp_extension's "No CUDA runtime" on CPU machines).
    Call it at an entry point (a tool's ``__main__``) before importing Detectron2, never from the
    library."""
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r"torch\.meshgrid", category=UserWarning)
    # Detectron2's resize of bitmasks goes through PIL (np.asarray gives a read-only array) and
    # then torch.from_numpy: harmless, the tensor is copied by torch.stack.
    warnings.filterwarnings("ignore", message=r"The given NumPy array is not writable", category=UserWarning)
    logging.getLogger("torch.fx._symbolic_trace").addFilter(
        lambda record: not record.getMessage().startswith("is_fx_tracing will return true")
    )
    # Printed on every CPU-only machine when Detectron2 imports torch.utils.cpp_extension.
    logging.getLogger("torch.utils.cpp_extension").addFilter(
        lambda record: not record.getMessage().startswith("No CUDA runtime is found")
    )
