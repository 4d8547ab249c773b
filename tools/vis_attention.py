"""Draw a detector's decoder cross-attention for the top detections of an image.

    python tools/vis_attention.py CONFIG CHECKPOINT IMAGE [--layer -1] [--heads 0 1 ...] \\
        [--top-k 3] [--score-thr 0.0] [--out-dir outputs/attention]

One PNG per detection, laid out like Figure 4 of the Conditional DETR paper: rows spatial
(``p_q . p_k``), content (``c_q . c_k``) and combined (the model's attention) softmax maps, one
column per head, each upsampled and overlaid on the image, with the predicted box (white) and
the reference point (red cross; DETR has none). Works for our Conditional DETR and for mmdet's
DETR and ConditionalDETR configs (``cdetr_mmdet.analysis``; the DETR split is documented there
and in docs/attention.md). e.g. after ``bash tools/run_demo.sh``:

    python tools/vis_attention.py work_dirs/demo/config.py work_dirs/demo/epoch_30.pth \\
        data/shapes/val/000000.png --out-dir outputs/attention
"""
import argparse
import sys
from pathlib import Path
from typing import List, Optional

import cdetr_mmdet  # noqa: F401  (registers our modules and safe checkpoint globals)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='the model config, e.g. work_dirs/demo/config.py')
    parser.add_argument('checkpoint', help='its weights, e.g. work_dirs/demo/epoch_30.pth')
    parser.add_argument('image', help='an image file (PNG, JPEG, ...)')
    parser.add_argument('--layer', type=int, default=-1,
                        help='decoder layer, negative counts from the end (default: -1, the last)')
    parser.add_argument('--heads', type=int, nargs='+', help='heads to draw (default: all)')
    parser.add_argument('--top-k', type=int, default=3,
                        help='draw the best-scoring detections (default: 3)')
    parser.add_argument('--score-thr', type=float, default=0.0,
                        help='only detections scoring at least this (default: 0.0)')
    parser.add_argument('--out-dir', default='outputs/attention',
                        help='where the PNGs go (default: outputs/attention)')
    parser.add_argument('--device', default='cpu', help="torch device (default: 'cpu')")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> List[Path]:
    """Draw the attention maps; returns the written PNGs."""
    args = parse_args(argv)
    if not Path(args.image).is_file():
        sys.exit(f'error: no such image: {args.image}')
    if args.top_k < 1:
        sys.exit(f'error: --top-k must be at least 1, got {args.top_k}')
    from mmdet.apis import init_detector
    from cdetr_mmdet.analysis.figures import check_layer_heads, draw_image_attention
    print(f'loading {args.config} with {args.checkpoint}', flush=True)
    model = init_detector(args.config, args.checkpoint, device=args.device)
    try:
        check_layer_heads(model, args.layer, args.heads)
    except ValueError as err:
        sys.exit(f'error: {err}')
    classes = model.dataset_meta.get('classes', ())
    print(f'analysing {args.image}', flush=True)
    written = draw_image_attention(model, args.image, Path(args.out_dir), classes,
                                   layer=args.layer, heads=args.heads, top_k=args.top_k,
                                   score_thr=args.score_thr)
    print(f'wrote {len(written)} PNG(s) to {args.out_dir}')
    return written


if __name__ == '__main__':
    main()
