"""Check the datasets of a config before training: annotation files, classes, boxes, images.

    python tools/check_dataset.py CONFIG [--splits train val test] [--cfg-options KEY=VALUE ...]

For every COCO-format split the config uses it reads the annotation file and the images' headers
and prints one summary per split: the label -> category mapping (matched by name), counts and
examples of problems, the box-size distribution against the model's feature stride. Exits 1 if
any split has an error (the same check runs at the start of training and testing; off with
``--cfg-options dataset_check.enabled=False``).
"""
import argparse
import sys
from typing import List, Optional

from mmengine.config import Config, DictAction
from mmengine.registry import init_default_scope

import cdetr_mmdet  # noqa: F401  (registers our modules)
from cdetr_mmdet.data import check_config


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='the config, e.g. configs/demo/conditional_detr_r18_shapes.py')
    parser.add_argument('--splits', nargs='+', default=['train', 'val', 'test'],
                        choices=['train', 'val', 'test'], help='which loaders to check (default: all)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, as in tools/train.py')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    """Print the report; returns the exit code (1 if any split has an error)."""
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    options = dict(cfg.get('dataset_check') or {})
    reports = check_config(cfg, args.splits,
                           small_box_fraction=options.get('small_box_fraction', 0.5),
                           progress=lambda msg: print(msg, flush=True))
    if not reports:
        print(f'[dataset check] {args.config}: no COCO-format split among {args.splits}')
    for report in reports:
        print(report.format())
    errors = sum(len(r.errors) for r in reports)
    warnings = sum(len(r.warnings) for r in reports)
    print(f'[dataset check] {len(reports)} split(s): {errors} error(s), {warnings} warning(s)')
    return 1 if errors else 0


if __name__ == '__main__':
    sys.exit(main())
