"""Keep the first query group of a Group DETR checkpoint (for K = 1 configs).

    python tools/keep_first_group.py group11.pth group0.pth --num-queries 300

A model trained with ``model.group_detr=K`` holds K * N object-query rows and,
in eval mode, uses only the first N: the result, loaded strictly into the same
config with ``group_detr=1``, computes exactly those eval-mode detections.
Without this step a K = 1 config refuses the checkpoint (shape mismatch). The
tool prints what it kept and records it in the checkpoint's ``meta``.
"""
import argparse
import sys
from pathlib import Path

from cdetr_mmdet.checkpoint import (keep_first_group, save_atomically,
                                    safe_torch_load)


def keep_first_group_file(src: Path, dst: Path, num_queries: int) -> int:
    """Write ``src`` with only its first query group to ``dst``.

    Args:
        src (Path): A ``group_detr=K`` checkpoint with a ``state_dict`` (ours
            or converted with ``tools/convert_checkpoint.py``).
        dst (Path): Where to write the result (atomically).
        num_queries (int): N, the queries per group.

    Returns:
        int: The source's number of groups K.

    Raises:
        KeyError: ``src`` has no ``state_dict``.
        ValueError: See :func:`keep_first_group`.
    """
    checkpoint = safe_torch_load(src)
    if 'state_dict' not in checkpoint:
        raise KeyError(f'{src}: no "state_dict" key (found '
                       f'{sorted(checkpoint)}); convert foreign checkpoints '
                       'with tools/convert_checkpoint.py first')
    state_dict, num_groups = keep_first_group(checkpoint['state_dict'],
                                              num_queries)
    meta = dict(checkpoint.get('meta', {}))
    meta['group_detr_first_group_of'] = num_groups
    save_atomically({'state_dict': state_dict, 'meta': meta}, dst)
    return num_groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', type=Path, help='Group DETR checkpoint')
    parser.add_argument('dst', type=Path, help='output checkpoint')
    parser.add_argument('--num-queries', type=int, required=True,
                        help="queries per group: the config's "
                        'model.num_queries (300 in the COCO configs)')
    args = parser.parse_args()
    try:
        groups = keep_first_group_file(args.src, args.dst, args.num_queries)
    except (KeyError, ValueError) as error:
        sys.exit(f'error: {error}')
    print(f'wrote {args.dst}: kept query group 0 of {groups} (rows '
          f'0-{args.num_queries - 1} of {groups * args.num_queries}); load '
          'it with model.group_detr=1')


if __name__ == '__main__':
    main()
