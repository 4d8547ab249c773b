"""COCO AP of an exported model through a deploy runner (tools/test.py's twin).

    python tools/test_deployed.py CONFIG MODEL.onnx
        --backend onnxruntime|openvino|openvino-fp32 [--batch-size N]
        [--threads N] [--limit N] [--out metrics.json] [--checkpoint CKPT]
        [--classwise] [--runtime]

Reads the config's test set (``test_dataloader.dataset``) and evaluator
(``test_evaluator``, e.g. mmdet's ``CocoMetric``); images are loaded,
resized, normalised and padded by the runner as the test pipeline does.
With ``--checkpoint``, PyTorch (mmdet's pipeline and ``test_step``) runs on
the same batches too and the largest detection differences are printed.
"""
import argparse
import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import cdetr_mmdet  # noqa: F401


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Command-line options."""
    from cdetr_mmdet.deploy import BACKENDS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='the config the model was exported from')
    parser.add_argument('model', help='.onnx file from tools/export_onnx.py')
    parser.add_argument('--backend', required=True, choices=BACKENDS)
    parser.add_argument('--batch-size', type=int, default=None,
                        help="images per run (default: the config's "
                        'test_dataloader.batch_size)')
    parser.add_argument('--threads', type=int, default=None,
                        help='runtime CPU threads (default: its own)')
    parser.add_argument('--limit', type=int, default=None,
                        help='run only the first N images (a smoke run: the '
                        'AP still counts the other images\' objects as missed)')
    parser.add_argument('--out', help='write the metrics here (JSON)')
    parser.add_argument('--runtime', action='store_true',
                        help='run the torch-free cdetr_runtime.Detector (the '
                        "file's own metadata, one image per run) instead of "
                        'the config-based runner; openvino-fp32 = its '
                        'openvino backend with precision f32')
    parser.add_argument('--classwise', action='store_true',
                        help='per-class AP table (CocoMetric classwise=True)')
    parser.add_argument('--checkpoint', default=None,
                        help='also run this PyTorch checkpoint on the same '
                        'batches and report the detection differences')
    return parser.parse_args(argv)


class RuntimeAdapter:
    """``cdetr_runtime.Detector`` behind the runners' ``predict``."""

    def __init__(self, model: str, backend: str, threads: Optional[int]):
        from cdetr_runtime import Detector
        engine, _, precision = backend.partition('-')
        self.detector = Detector(model, engine, threads,
                                 {'fp32': 'f32'}.get(precision))

    def predict(self, images: list) -> list:
        """DetDataSamples of the runtime's detections."""
        import torch
        from mmdet.structures import DetDataSample
        from mmengine.structures import InstanceData
        samples = []
        for det in self.detector(images):
            sample = DetDataSample(metainfo=dict(ori_shape=det.image_size))
            sample.pred_instances = InstanceData(
                bboxes=torch.from_numpy(det.boxes),
                scores=torch.from_numpy(det.scores),
                labels=torch.from_numpy(det.labels))
            samples.append(sample)
        return samples


def main(argv: Optional[List[str]] = None) -> Dict[str, float]:
    """Evaluate; returns the metrics dict.

    A missing or invalid model file, a config that does not match it or a
    broken test set (e.g. a missing annotation file) exits with status 1 and
    the error's message on stderr (``ERROR: ...``), as tools/export_onnx.py.
    """
    args = parse_args(argv)
    try:
        return evaluate(args)
    except (FileNotFoundError, ValueError) as err:  # DatasetError: a ValueError
        print(f'ERROR: {err}', file=sys.stderr)
        raise SystemExit(1) from None


def evaluate(args: argparse.Namespace) -> Dict[str, float]:
    """Run the model on the config's test set; returns the metrics dict."""
    from mmdet.registry import DATASETS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config
    from mmengine.evaluator import Evaluator

    from cdetr_mmdet.deploy import build_runner
    register_all_modules(init_default_scope=True)
    cfg = Config.fromfile(args.config)
    if args.runtime:
        runner = RuntimeAdapter(args.model, args.backend, args.threads)
    else:
        runner = build_runner(args.backend, args.model, cfg, args.threads)
    dataset = DATASETS.build(cfg.test_dataloader.dataset)
    if args.classwise:
        cfg.test_evaluator.classwise = True
    evaluator = Evaluator(cfg.test_evaluator)
    evaluator.dataset_meta = dataset.metainfo
    num = len(dataset) if args.limit is None else min(args.limit,
                                                       len(dataset))
    batch_size = args.batch_size or cfg.test_dataloader.get('batch_size', 1)
    print(f'{args.backend}: {num} images of {cfg.test_dataloader.dataset.get("ann_file")}, '
          f'batch {batch_size}')
    detector = diffs = None
    if args.checkpoint:
        import numpy as np
        import torch
        from mmdet.apis import init_detector
        from mmengine.dataset import pseudo_collate

        from cdetr_mmdet.deploy.compare import compare_detections
        detector = init_detector(cfg, args.checkpoint, device='cpu')
        diffs = dict(score=0., box=0., label_mismatches=0, boundary_ties=0,
                     compared=0)
    start = time.perf_counter()
    for first in range(0, num, batch_size):
        infos = [dataset.get_data_info(i)
                 for i in range(first, min(first + batch_size, num))]
        samples = runner.predict([info['img_path'] for info in infos])
        for info, sample in zip(infos, samples):
            sample.set_metainfo(dict(img_id=info['img_id'],
                                     img_path=info['img_path']))
        evaluator.process(samples)
        if detector is not None:
            with torch.no_grad():
                ref = detector.test_step(pseudo_collate(
                    [dataset[i] for i in range(first, first + len(infos))]))
            for r, o in zip(ref, samples):
                d = compare_detections(
                    *[[np.stack([getattr(x.pred_instances, key).numpy()])
                       for key in ('scores', 'labels', 'bboxes')]
                      for x in (r, o)], np.array([o.ori_shape]))
                diffs = {k: max(v, d[k]) if k in ('score', 'box')
                         else v + d[k] for k, v in diffs.items()}
        done = first + len(infos)
        if done % (20 * batch_size) < batch_size or done == num:
            print(f'  {done}/{num} images, {time.perf_counter() - start:.1f} s')
    metrics = evaluator.evaluate(num)
    print(json.dumps(metrics, indent=1))
    if diffs is not None:
        print(f'vs PyTorch ({args.checkpoint}) on the same {num} images: '
              f'max |score diff| {diffs["score"]:.2e}, max |box diff| '
              f'{diffs["box"]:.2e} of the original image size, label '
              f'mismatches {diffs["label_mismatches"]} ({diffs["compared"]} '
              f'detections compared; top-k boundary ties '
              f'not compared: {diffs["boundary_ties"]})')
    if args.out:
        Path(args.out).write_text(json.dumps(dict(
            backend=args.backend, model=args.model, config=args.config,
            num_images=num, metrics=metrics, diffs_vs_pytorch=diffs),
            indent=1))
    return metrics


if __name__ == '__main__':
    main()
