"""Detect objects in your own image with a trained config + checkpoint and draw them.

    python tools/infer.py IMAGE CONFIG WEIGHTS --out-dir DIR [--score-thr 0.3] [--device cpu]

e.g. after ``bash tools/run_demo.sh``:

    python tools/infer.py my_shapes.png work_dirs/demo/config.py work_dirs/demo/epoch_40.pth \\
        --out-dir outputs/

Writes ``DIR/vis/<image name>.png`` (boxes, class names, scores) and ``DIR/preds/<name>.json``,
and prints the PNG's path. The demo model was trained on 128 px images: the config's test
pipeline resizes any image to fit 128x128 and the boxes are mapped back to the original.
"""
import argparse
import sys
from pathlib import Path
from typing import List, Optional

import cdetr_mmdet  # noqa: F401  (registers our modules and safe checkpoint globals)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('image', help='an image file (PNG, JPEG, ...)')
    parser.add_argument('config', help='the model config, e.g. work_dirs/demo/config.py')
    parser.add_argument('weights', help='a checkpoint, e.g. work_dirs/demo/epoch_40.pth')
    parser.add_argument('--out-dir', required=True, help='where vis/ and preds/ are written')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='draw detections scoring at least this (default: 0.3)')
    parser.add_argument('--device', default='cpu', help="torch device (default: 'cpu')")
    parser.add_argument('--optimize', action='store_true',
                        help='fold batch norms into convolutions, channels-last backbone '
                        '(faster; equal up to float rounding)')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> Path:
    """Run the detector on one image; returns the drawn PNG's path."""
    args = parse_args(argv)
    image = Path(args.image)
    from cdetr_mmdet.apis import CdetrDetInferencer, InputError, check_image_input
    try:  # before the model is built: a bad image is named at once
        check_image_input(str(image), 'image')
    except InputError as e:
        sys.exit(f'error: {e}')
    # Strict: a checkpoint that does not fit the config fails, naming the keys.
    inferencer = CdetrDetInferencer(model=args.config, weights=args.weights, device=args.device,
                                    show_progress=False, optimize=args.optimize)
    try:  # again with the config's test pipeline (an image too thin for its Resize)
        check_image_input(str(image), 'image', inferencer.cfg)
    except InputError as e:
        sys.exit(f'error: {e}')
    result = inferencer(str(image), out_dir=args.out_dir, pred_score_thr=args.score_thr,
                        no_save_pred=False)
    pred = result['predictions'][0]
    kept = [s for s in pred['scores'] if s >= args.score_thr]
    png = Path(args.out_dir) / 'vis' / (image.stem + '.png')
    if not png.is_file():  # DetInferencer keeps the input's file name
        png = Path(args.out_dir) / 'vis' / image.name
    print(f'{len(kept)} detections with score >= {args.score_thr}')
    print(png)
    return png


if __name__ == '__main__':
    main()
