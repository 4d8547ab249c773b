"""``python -m cdetr_runtime MODEL.onnx IMAGE... [--out detections.json]``.

Writes (or prints) JSON: per image its path, size and detections (``box``
xyxy in original-image pixels, ``score``, ``label``, ``class_name``). Exit
status 2 with a one-line error for a bad model file or image.
"""
import argparse
import json
import sys
from typing import List, Optional

from .backends import BACKENDS
from .detector import Detector
from .model_file import ModelFormatError
from .preprocess import ImageError


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        prog='python -m cdetr_runtime',
        description='Detect objects with a model from tools/export_onnx.py '
        '(no PyTorch needed).')
    parser.add_argument('model', help='.onnx file from tools/export_onnx.py')
    parser.add_argument('images', nargs='+', help='image files')
    parser.add_argument('--out', help='write the detections here (JSON); '
                        'default: print them')
    parser.add_argument('--backend', default='onnxruntime', choices=BACKENDS)
    parser.add_argument('--threads', type=int, default=None,
                        help='CPU threads (default: the engine\'s)')
    parser.add_argument('--precision', default=None,
                        help="OpenVINO's inference precision hint (f32, "
                        'bf16); default: its own choice for the CPU')
    parser.add_argument('--score-thr', type=float, default=None,
                        help="score threshold (default: the model's)")
    parser.add_argument('--batch-size', type=int, default=1)
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    """Run; returns the exit status."""
    args = parse_args(argv)
    try:
        detector = Detector(args.model, args.backend, args.threads,
                            args.precision, args.score_thr)
        results = detector(args.images, batch_size=args.batch_size)
    except (FileNotFoundError, ModelFormatError, ImageError, ImportError,
            ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    report = dict(model=args.model, backend=args.backend,
                  model_precision=detector.info.precision,
                  engine_precision=detector.session.precision,
                  score_thr=detector.score_thr, classes=detector.classes,
                  images=[dict(image=path, **res.to_dict())
                          for path, res in zip(args.images, results)])
    text = json.dumps(report, indent=1)
    if args.out:
        with open(args.out, 'w') as f:
            f.write(text + '\n')
        print(f'{sum(len(r.scores) for r in results)} detections in '
              f'{len(results)} images written to {args.out}')
    else:
        print(text)
    return 0


if __name__ == '__main__':
    sys.exit(main())
