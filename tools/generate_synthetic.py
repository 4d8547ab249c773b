"""Generate the synthetic shapes detection dataset (COCO format) used by the demo configs.

Example:
    python tools/generate_synthetic.py --out-dir data/synthetic --num-train 1000 --num-val 200
"""
import argparse
import json
import sys
import time
from pathlib import Path
from typing import List, Optional

# Run from a source checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cdetr_mmdet.data.synthetic_shapes import PRESETS, ensure_dataset, generate_dataset  # noqa: E402


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse command-line arguments; defaults match generate_dataset()."""
    defaults = generate_dataset.__kwdefaults__
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out-dir', required=True, help='dataset root (data_root in configs)')
    parser.add_argument('--num-train', type=int, default=defaults['num_train'])
    parser.add_argument('--num-val', type=int, default=defaults['num_val'])
    parser.add_argument('--img-size', type=int, nargs='+', default=[defaults['img_size']], metavar='PX',
                        help='square side, or MIN MAX to draw each width/height from a range')
    parser.add_argument('--min-objects', type=int, default=defaults['min_objects'])
    parser.add_argument('--max-objects', type=int, default=defaults['max_objects'])
    parser.add_argument('--empty-fraction', type=float, default=defaults['empty_fraction'],
                        help='fraction of images with no shapes (rounded half up per split)')
    parser.add_argument('--seed', type=int, default=defaults['seed'])
    parser.add_argument('--difficulty', choices=sorted(PRESETS), default=defaults['difficulty'])
    parser.add_argument('--hard', action='store_const', dest='difficulty', const='hard',
                        help='shorthand for --difficulty hard')
    parser.add_argument('--min-size-frac', type=float, help='override the preset (fraction of image side)')
    parser.add_argument('--max-size-frac', type=float, help='override the preset (fraction of image side)')
    parser.add_argument('--noise-std', type=float, help='override the preset (0-255 scale)')
    parser.add_argument('--max-occluded-frac', type=float, help='override the preset')
    parser.add_argument('--if-missing', action='store_true',
                        help='skip generation when out-dir already holds a dataset with these arguments')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    """Generate (or reuse) the dataset and print a JSON summary."""
    args = vars(parse_args(argv))
    out_dir, if_missing = args.pop('out_dir'), args.pop('if_missing')
    sizes = args.pop('img_size')
    if len(sizes) > 2:
        sys.exit(f'--img-size takes one or two values, got {len(sizes)}')
    args['img_size'] = sizes[0] if len(sizes) == 1 else tuple(sizes)
    start = time.perf_counter()
    try:
        result = (ensure_dataset if if_missing else generate_dataset)(out_dir, **args)
    except ValueError as err:
        sys.exit(f'error: {err}')
    result['seconds'] = round(time.perf_counter() - start, 2)
    print(json.dumps(result, indent=1))


if __name__ == '__main__':
    main()
