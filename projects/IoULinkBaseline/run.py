#!/usr/bin/env python
"""
Run an iai_d2 tool (tools/train_net.py, tools/analyze_tracking.py, ...) with the IoULinkRCNN
meta-architecture registered, e.g.

    python projects/IoULinkBaseline/run.py train_net.py --eval-only \
        --config-file projects/IoULinkBaseline/configs/iou_link_tiny.yaml \
        MODEL.WEIGHTS output/synthetic/maskrcnn_tiny_frames/model_final.pth
    python projects/IoULinkBaseline/run.py analyze_tracking.py \
        --config-file projects/IoULinkBaseline/configs/iou_link_tiny.yaml MODEL.WEIGHTS ...

Single process only (``--num-gpus 1``).
"""
import os
import runpy
import sys

PROJECT_DIR = os.path.dirname(os.path.abspath(__file__))
TOOLS_DIR = os.path.join(PROJECT_DIR, "..", "..", "tools")

if __name__ == "__main__":
    if len(sys.argv) < 2 or not os.path.isfile(os.path.join(TOOLS_DIR, sys.argv[1])):
        sys.exit(f"usage: {sys.argv[0]} TOOL.py [tool arguments]; TOOL.py is a script of {TOOLS_DIR}")
    sys.path.insert(0, PROJECT_DIR)
    import iou_link_baseline  # noqa: F401  (registers IoULinkRCNN)

    tool = os.path.join(TOOLS_DIR, sys.argv[1])
    sys.argv = [tool] + sys.argv[2:]
    runpy.run_path(tool, run_name="__main__")
