"""A first run on a machine without internet: checkpoints that cannot be downloaded are one line
naming the URL and the fix; more DATALOADER workers than cores are capped with one log line."""
import http.server
import os
import subprocess
import sys
import threading

import pytest

from iai_d2.utils import check_weights

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
R50_CONFIG = os.path.join(REPO, "configs", "youtubevis_2019", "iai_R50_FPN.yaml")


class _Handler(http.server.BaseHTTPRequestHandler):
    """/missing.pkl: 404; /truncated.pkl: announces 1,000 bytes and sends 10."""

    def do_GET(self):
        if self.path.endswith("truncated.pkl"):
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"0123456789")
            return
        self.send_error(404)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server_url():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _closed_port_url():
    import socket

    with socket.socket() as s:  # a port nobody listens on once the socket is closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/models/model_final.pkl"


@pytest.mark.parametrize("case", ["refused", "404", "truncated"])
def test_unfetchable_weights_are_one_line_with_the_fix(case, server_url, cache_dir):
    url = {"refused": _closed_port_url(), "404": server_url + "/models/missing.pkl",
           "truncated": server_url + "/models/truncated.pkl"}[case]
    with pytest.raises(FileNotFoundError) as info:
        check_weights(url)
    message = str(info.value)
    assert "\n" not in message
    assert f"MODEL.WEIGHTS {url} could not be downloaded" in message
    assert {"refused": "Connection refused", "404": "404", "truncated": "retrieval incomplete"}[case] in message
    assert "local path as MODEL.WEIGHTS" in message
    assert str(cache_dir / "models" / os.path.basename(url)) in message
    assert not (cache_dir / "models" / os.path.basename(url)).exists()  # no partial file left to load


def test_detectron2_url_names_the_https_file_and_the_cache(server_url, cache_dir, monkeypatch):
    from detectron2.utils.file_io import Detectron2Handler

    monkeypatch.setattr(Detectron2Handler, "S3_DETECTRON2_PREFIX", server_url + "/detectron2/")
    with pytest.raises(FileNotFoundError) as info:
        check_weights("detectron2://COCO-InstanceSegmentation/x/model_final_f10217.pkl?matching_heuristics=True")
    message = str(info.value)
    assert "MODEL.WEIGHTS detectron2://COCO-InstanceSegmentation/x/model_final_f10217.pkl could not" in message
    assert f"download {server_url}/detectron2/COCO-InstanceSegmentation/x/model_final_f10217.pkl" in message
    assert str(cache_dir / "detectron2" / "COCO-InstanceSegmentation" / "x" / "model_final_f10217.pkl") in message


def test_cached_checkpoint_is_used_without_network(tmp_path, cache_dir):
    """Copying the file into the cache path the error names is the second offline fix."""
    url = _closed_port_url()
    cached = cache_dir / "models" / "model_final.pkl"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"weights")
    from iai_d2.utils import fetch_weights

    assert fetch_weights(url) == str(cached)


def test_readme_training_command_without_internet_is_one_line(tmp_path):
    """The README's YouTube-VIS command, its COCO checkpoint unreachable: one line, exit code 1,
    before any dataset is read."""
    url = _closed_port_url()
    env = dict(os.environ, FVCORE_CACHE=str(tmp_path / "cache"))
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "train_net.py"), "--config-file", R50_CONFIG,
         "MODEL.WEIGHTS", url, "MODEL.DEVICE", "cpu", "OUTPUT_DIR", str(tmp_path / "out")],
        capture_output=True, text=True, cwd=str(tmp_path), env=env, timeout=300, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: MODEL.WEIGHTS {url} could not be downloaded"), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_more_workers_than_cores_are_capped_with_one_log_line(tmp_path):
    from iai_d2 import add_iai_config
    from iai_d2.engine import available_cpus, parse_launch_args, setup_cfg

    args = parse_launch_args(["--config-file", R50_CONFIG, "OUTPUT_DIR", str(tmp_path),
                              "DATALOADER.NUM_WORKERS", str(available_cpus() + 7)])
    cfg = setup_cfg(args, add_iai_config)
    assert cfg.DATALOADER.NUM_WORKERS == available_cpus()
    with open(tmp_path / "log.txt") as f:
        capped = [line for line in f if "CPU cores this process may use" in line]
    assert len(capped) == 1 and f"using {available_cpus()}" in capped[0]


def test_video_predictor_with_unreachable_weights(cache_dir):
    from detectron2.config import get_cfg

    from iai_d2 import add_iai_config
    from iai_d2.predictor import VideoPredictor

    cfg = get_cfg()
    add_iai_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs", "synthetic", "iai_tiny.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = _closed_port_url()
    with pytest.raises(FileNotFoundError, match="could not be downloaded .* local path as MODEL.WEIGHTS"):
        VideoPredictor(cfg)
