#!/usr/bin/env bash
# Installs everything iai_d2 needs into the Python environment given as $1 (a venv's python).
# Detectron2: an existing importable build (e.g. an official source build) is kept, together with
# the torch/torchvision it was compiled against; otherwise the
# registry repackaging sal-detectron2==0.7.2 (Detectron2 0.7, built for CPython 3.10) is installed
# without dependency resolution, since its metadata pins numpy<2 and black, which it does not need.
set -euo pipefail
PY="$1"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
if "$PY" -c "import detectron2" 2>/dev/null; then
  # Keep the user's Detectron2 and the torch/torchvision it was built against.
  echo "install_deps: keeping the Detectron2 already importable: $("$PY" -c 'import detectron2; print(detectron2.__file__)')"
  reqs="$(mktemp)"
  grep -v -E '^(torch|torchvision)==' "$ROOT/requirements.txt" > "$reqs"
  "$PY" -m pip install -q --disable-pip-version-check -r "$reqs"
  rm -f "$reqs"
else
  "$PY" -m pip install -q --disable-pip-version-check -r "$ROOT/requirements.txt"
  tmp="$(mktemp -d)"
  "$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
      --python-version 3.10 sal-detectron2==0.7.2 -d "$tmp"
  "$PY" -m installer "$tmp"/*.whl
  rm -rf "$tmp"
fi
# TrackEval (HOTA / IDF1 of the tracking diagnosis) without dependency resolution: its metadata
# requires opencv-python, whose cv2 would replace opencv-python-headless's; it needs nothing that
# requirements.txt does not install.
"$PY" -m pip install -q --disable-pip-version-check --no-deps trackeval==1.3.0
"$PY" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e "$ROOT"
"$PY" -c "import detectron2, iai_d2; print('install_deps: detectron2', detectron2.__version__, '+ iai_d2 ok')"
