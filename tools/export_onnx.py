"""Export a Conditional DETR checkpoint to ONNX, verified against PyTorch.

    python tools/export_onnx.py CONFIG CHECKPOINT OUT.onnx [--dynamic]
        [--shape H W] [--batch N] [--opset 17] [--max-per-img K]
        [--exporter torchscript|dynamo]
        [--int8 [--calib N] [--calib-dir DIR] [--int8-out OUT.int8.onnx]
         [--keep-float REGEX ...] [--no-smooth-quant]]

The graph takes a normalised, zero-padded batch ``inputs`` (bs, 3, H, W)
float32 and its padding mask ``mask`` (bs, H, W) bool (True at padding) and
returns the top-k ``scores`` (bs, k), ``labels`` (bs, k) and ``boxes``
(bs, k, 4) xyxy in input pixels. The file is checked with onnx.checker, run
with ONNX Runtime against PyTorch on new inputs (the differences are
printed) and written only if they match. With ``--int8`` the verified
file is then quantised with NNCF (INT8 QDQ, calibrated on N images of the
config's val set or of a folder) into OUT.int8.onnx. See docs/deploy.md.
"""
import argparse
import sys
from typing import List, Optional, Tuple

import cdetr_mmdet  # noqa: F401  (registers modules, safe checkpoint globals)


def default_shape(cfg) -> Tuple[int, int]:
    """(H, W) of the largest landscape image the test ``Resize`` gives."""
    from cdetr_mmdet.deploy import config_preprocessing
    scale = config_preprocessing(cfg)['resize_scale']
    if scale is None:
        raise ValueError('the test pipeline has no Resize: pass --shape H W')
    return min(scale), max(scale)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='model config (e.g. work_dirs/demo/config.py)')
    parser.add_argument('checkpoint', help='checkpoint (.pth)')
    parser.add_argument('out', help='output .onnx file')
    parser.add_argument('--dynamic', action='store_true',
                        help='dynamic batch size, height and width')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='traced (static: the only) input size; default '
                        'the test Resize scale, landscape (e.g. 800 1333)')
    parser.add_argument('--batch', type=int, default=1,
                        help='traced (static: the only) batch size')
    parser.add_argument('--opset', type=int, default=17)
    parser.add_argument('--max-per-img', type=int, default=None,
                        help="top-k in the graph (default: the config's "
                        'test_cfg.max_per_img)')
    parser.add_argument('--exporter', default='torchscript',
                        choices=['torchscript', 'dynamo'],
                        help='torch.onnx.export(dynamo=False) (default, fast) '
                        'or the torch.export-based exporter')
    parser.add_argument('--tol', type=float, default=1e-4,
                        help='max score / normalised box difference allowed')
    int8 = parser.add_argument_group('INT8 post-training quantisation (NNCF)')
    int8.add_argument('--int8', action='store_true',
                      help='also write an INT8 (QDQ) model, calibrated')
    int8.add_argument('--calib', type=int, default=100, metavar='N',
                      help='calibration images (default 100): the first N '
                      "of the config's val_dataloader set, or of --calib-dir")
    int8.add_argument('--calib-dir', default=None,
                      help='take the calibration images from this folder')
    int8.add_argument('--int8-out', default=None,
                      help='INT8 file (default: OUT with .int8.onnx)')
    int8.add_argument('--keep-float', nargs='*', default=None,
                      metavar='REGEX', help='node-name regexes kept in float '
                      '(default: the measured choice, see docs/deploy.md; '
                      'give none to quantise everything)')
    int8.add_argument('--no-smooth-quant', action='store_true',
                      help="disable NNCF's SmoothQuant")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    """Export; returns the exit status (1 when the export does not match)."""
    args = parse_args(argv)
    from mmdet.apis import init_detector
    from mmengine.config import Config

    from cdetr_mmdet.deploy.exporter import ExportMismatchError, export_onnx
    from cdetr_mmdet.deploy.requirements import import_optional
    for name in ('onnx', 'onnxruntime') + (('nncf', ) if args.int8 else ()):
        import_optional(name)  # fail before loading the model
    cfg = Config.fromfile(args.config)
    detector = init_detector(cfg, args.checkpoint, device='cpu')
    shape = tuple(args.shape) if args.shape else default_shape(cfg)
    if args.dynamic:  # a dynamic batch is traced with two images
        what = (f'traced with {max(args.batch, 2)}x3x{shape[0]}x{shape[1]}, '
                'dynamic batch, height and width')
    else:
        what = f'static input {args.batch}x3x{shape[0]}x{shape[1]}'
    print(f'exporting {args.config} + {args.checkpoint}: {what}')
    try:
        export_onnx(detector, cfg, args.out, shape, batch=args.batch,
                    dynamic=args.dynamic, opset=args.opset,
                    max_per_img=args.max_per_img, exporter=args.exporter,
                    tol=args.tol)
    except ExportMismatchError as err:
        print(f'ERROR: {err}', file=sys.stderr)
        return 1
    if args.int8:
        from cdetr_mmdet.deploy.quantize import (DEFAULT_FLOAT_PATTERNS,
                                                 calibration_images,
                                                 int8_path, quantize_int8)
        images = calibration_images(cfg, args.calib, args.calib_dir)
        quantize_int8(args.out, args.int8_out or int8_path(args.out), images,
                      DEFAULT_FLOAT_PATTERNS if args.keep_float is None
                      else args.keep_float,
                      smooth_quant=not args.no_smooth_quant)
    return 0


if __name__ == '__main__':
    sys.exit(main())
