"""How closely INT8 (or bf16) runs follow the fp32 one, detection by detection.

    python tools/compare_int8.py FP32.onnx INT8.onnx [INT8b.onnx ...]
        --images DIR [--top 10] [--backend openvino] [--precision f32]
    python tools/compare_int8.py FP32.onnx FP32.onnx --precision bf16 \
        --images DIR        # OpenVINO bf16 against f32, the same file

Runs ``cdetr_runtime.Detector`` (score threshold 0, one thread; OpenVINO's
f32 hint for the reference, ``--precision`` for the compared files) on every
image of DIR; each of fp32's top ``--top`` detections per image is matched
to the compared run's detection of the same label with the closest box.
Prints, per compared file, the median and 95th percentile of the score and
box (pixel) differences and how often the top-1 labels agree.
Torch-free: needs only the runtime's packages.
"""
import argparse
import glob
import json
import os

import numpy as np

from cdetr_runtime import Detector


def agreement(ref, out, top):
    """Score / box differences of ``ref``'s top detections matched in ``out``."""
    scores, boxes = [], []
    for r, q in zip(ref, out):
        for i in range(min(top, len(r.scores))):
            same = np.flatnonzero(q.labels == r.labels[i])
            if not len(same):
                boxes.append(np.inf)  # counts as a miss in the percentiles
                continue
            diff = np.abs(q.boxes[same] - r.boxes[i]).max(1)  # (n,) px
            j = same[np.argmin(diff)]
            boxes.append(float(diff.min()))
            scores.append(float(abs(q.scores[j] - r.scores[i])))
    return dict(score_median=float(np.median(scores)),
                score_p95=float(np.percentile(scores, 95)),
                box_px_median=float(np.median(boxes)),
                box_px_p95=float(np.percentile(boxes, 95)),
                top1_label_agree=float(np.mean(
                    [r.labels[0] == q.labels[0] for r, q in zip(ref, out)])))


def main(argv=None):
    """Compare; returns {file: stats}."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('fp32')
    parser.add_argument('int8', nargs='+')
    parser.add_argument('--images', required=True, help='folder of images')
    parser.add_argument('--top', type=int, default=10)
    parser.add_argument('--backend', default='openvino')
    parser.add_argument('--precision', default='f32', choices=('f32', 'bf16'),
                        help="OpenVINO's precision hint of the compared "
                        'files (the reference runs f32; default f32)')
    args = parser.parse_args(argv)
    if args.precision != 'f32' and args.backend != 'openvino':
        parser.error('--precision is an OpenVINO hint: use --backend openvino')
    images = sorted(glob.glob(os.path.join(args.images, '*.png'))
                    + glob.glob(os.path.join(args.images, '*.jpg')))
    if not images:
        parser.error(f'no .png or .jpg images in {args.images}')
    openvino = args.backend == 'openvino'

    def run(path, hint):
        return Detector(path, args.backend, 1, hint if openvino else None,
                        score_thr=0.)(images)

    ref = run(args.fp32, 'f32')
    stats = {}
    for path in args.int8:
        stats[path] = agreement(ref, run(path, args.precision), args.top)
        print(path, json.dumps(stats[path]))
    return stats


if __name__ == '__main__':
    main()
