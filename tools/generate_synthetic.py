"""Generate the synthetic shapes detection dataset (COCO format) used by the demo configs.

Example:
    python tools/generate_synthetic.py --out-dir data/synthetic --num-train 1000 --num-val 200
"""
import argparse
import json
import sys
import time
from typing import List, Optional

from cdetr_mmdet.data.synthetic_shapes import (PRESETS, DatasetSettings,
                                               ensure_dataset, generate_dataset)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse command-line arguments; defaults are DatasetSettings'."""
    defaults = DatasetSettings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out-dir', required=True, help='dataset root (data_root in configs)')
    parser.add_argument('--num-train', type=int, default=defaults.num_train)
    parser.add_argument('--num-val', type=int, default=defaults.num_val)
    parser.add_argument('--img-size', type=int, nargs='+', default=[defaults.img_size],
                        metavar='PX',
                        help='square side, or MIN MAX to draw each width/height from a range')
    parser.add_argument('--min-objects', type=int, default=defaults.min_objects)
    parser.add_argument('--max-objects', type=int, default=defaults.max_objects)
    parser.add_argument('--empty-fraction', type=float, default=defaults.empty_fraction,
                        help='fraction of images with no shapes (rounded half up per split)')
    parser.add_argument('--seed', type=int, default=defaults.seed)
    parser.add_argument('--difficulty', choices=sorted(PRESETS), default=defaults.difficulty)
    parser.add_argument('--hard', action='store_const', dest='difficulty', const='hard',
                        help='shorthand for --difficulty hard')
    parser.add_argument('--min-size-frac', type=float,
                        help='override the preset (fraction of image side)')
    parser.add_argument('--max-size-frac', type=float,
                        help='override the preset (fraction of image side)')
    parser.add_argument('--noise-std', type=float, help='override the preset (0-255 scale)')
    parser.add_argument('--max-occluded-frac', type=float, help='override the preset')
    parser.add_argument('--if-missing', action='store_true',
                        help='skip generation when out-dir already holds a dataset with these '
                        'settings')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    """Generate (or reuse) the dataset and print a JSON summary."""
    args = parse_args(argv)
    if len(args.img_size) > 2:
        sys.exit(f'--img-size takes one or two values, got {len(args.img_size)}')
    settings = dict(
        num_train=args.num_train, num_val=args.num_val,
        img_size=args.img_size[0] if len(args.img_size) == 1 else tuple(args.img_size),
        min_objects=args.min_objects, max_objects=args.max_objects,
        empty_fraction=args.empty_fraction, seed=args.seed, difficulty=args.difficulty,
        min_size_frac=args.min_size_frac, max_size_frac=args.max_size_frac,
        noise_std=args.noise_std, max_occluded_frac=args.max_occluded_frac)
    start = time.perf_counter()
    try:
        result = (ensure_dataset if args.if_missing else generate_dataset)(args.out_dir,
                                                                           **settings)
    except ValueError as err:
        sys.exit(f'error: {err}')
    result['seconds'] = round(time.perf_counter() - start, 2)
    print(json.dumps(result, indent=1))


if __name__ == '__main__':
    main()
