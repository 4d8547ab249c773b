"""Remove the classification layer from a checkpoint, for fine-tuning.

    python tools/drop_class_head.py coco_r50.pth coco_r50_no_cls.pth

Loading the result with ``load_from`` and ``load_from_skip =
['bbox_head.fc_cls']`` keeps the backbone, transformer and box head and leaves
the freshly initialised class head (any ``num_classes``); without
``load_from_skip`` the strict load refuses the missing class head.
"""
import argparse
from pathlib import Path

from cdetr_mmdet.checkpoint.safety import safe_torch_load
from cdetr_mmdet.checkpoint import save_atomically
from cdetr_mmdet.checkpoint.state_dict_check import annotate_load

CLASS_HEAD_PREFIX = 'bbox_head.fc_cls.'


def drop_class_head(src: Path, dst: Path) -> list:
    """Write ``src`` without the class head to ``dst``.

    Args:
        src (Path): A checkpoint with a ``state_dict`` (ours or converted).
        dst (Path): Where to write the result (atomically).

    Returns:
        list[str]: The removed keys.

    Raises:
        KeyError: If ``src`` has no ``state_dict`` or no class head keys.
    """
    checkpoint = safe_torch_load(src)
    if 'state_dict' not in checkpoint:
        raise KeyError(f'{src}: no "state_dict" key (found '
                       f'{sorted(checkpoint)}); convert foreign checkpoints '
                       'with tools/convert_checkpoint.py first')
    state_dict = checkpoint['state_dict']
    removed = [k for k in state_dict if k.startswith(CLASS_HEAD_PREFIX)]
    if not removed:
        raise KeyError(f'{src}: no "{CLASS_HEAD_PREFIX}*" keys to drop')
    kept = {k: v for k, v in state_dict.items() if k not in removed}
    result = {'state_dict': kept, 'meta': checkpoint.get('meta', {})}
    # Declared in the file, so that mmengine's load_checkpoint (which our
    # detector makes strict) leaves the class head fresh instead of refusing
    # it; the runner's load_from still needs load_from_skip.
    annotate_load(result, left_out=[CLASS_HEAD_PREFIX.rstrip('.')],
                  left_out_by='tools/drop_class_head.py')
    save_atomically(result, dst)
    return removed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', type=Path, help='input checkpoint')
    parser.add_argument('dst', type=Path, help='output checkpoint')
    args = parser.parse_args()
    removed = drop_class_head(args.src, args.dst)
    print(f'wrote {args.dst} without {", ".join(removed)}')


if __name__ == '__main__':
    main()
