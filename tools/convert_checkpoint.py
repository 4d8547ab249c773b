"""Convert official / Hugging Face / mmdet Conditional DETR weights to ours.

Examples::

    python tools/convert_checkpoint.py ConditionalDETR_r50_epoch50.pth \\
        checkpoints/cdetr_r50_official.pth --from official
    python tools/convert_checkpoint.py path/to/conditional-detr-resnet-50 \\
        checkpoints/cdetr_r50_hf.pth --from hf
    python tools/convert_checkpoint.py \\
        conditional-detr_r50_8xb2-50e_coco_20221121_180202-c83a1dc0.pth \\
        checkpoints/cdetr_r50_mmdet.pth --from mmdet

The conversion is strict: it fails, listing every offending key, unless the
result fills the model of ``--config`` exactly. See docs/checkpoints.md.
"""
import argparse
import sys

from mmengine.config import DictAction

from cdetr_mmdet.checkpoint.safety import UnsafeCheckpointError
from cdetr_mmdet.convert import (DEFAULT_CONFIG, SOURCES,
                                 CheckpointMismatchError, convert_checkpoint)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Convert Conditional DETR weights to cdetr_mmdet.')
    parser.add_argument('src', help='source checkpoint file, or a Hugging '
                        'Face model folder (save_pretrained output)')
    parser.add_argument('dst', help='output checkpoint ({"state_dict", '
                        '"meta"}), for load_from / tools/test.py')
    parser.add_argument('--from', dest='source', required=True,
                        choices=SOURCES, help='layout of the source')
    parser.add_argument('--keep-91-classes', action='store_true',
                        help='keep the 91 class rows indexed by COCO '
                        'category id (official/hf); the config loading the '
                        'result then needs model.bbox_head.num_classes=91')
    parser.add_argument('--config', default=str(DEFAULT_CONFIG),
                        help='config whose model the result must fill '
                        '(default: %(default)s)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of --config, as in '
                        'tools/test.py')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    try:
        result = convert_checkpoint(args.src, args.dst, args.source,
                                    keep_91=args.keep_91_classes,
                                    config=args.config,
                                    cfg_options=args.cfg_options)
    except (CheckpointMismatchError, UnsafeCheckpointError,
            FileNotFoundError, ValueError) as error:
        sys.exit(f'error: {error}')
    state_dict = result['state_dict']
    print(f'Wrote {args.dst}: {len(state_dict)} tensors, '
          f'{sum(v.numel() for v in state_dict.values()):,} values, class '
          f'rows by {result["meta"]["class_rows"]}, every source key used.')


if __name__ == '__main__':
    main()
