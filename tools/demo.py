"""End-to-end demo: synthetic data -> training -> COCO evaluation -> drawn detections.

    python tools/demo.py                 # the full demo, ~10 min of training on 2 CPU cores
    python tools/demo.py --quick         # a tiny run (CI): a handful of images, a few iterations

Steps:
1. generate the synthetic shapes dataset under ``--data-root`` unless it is already there;
2. train the config (default: our Conditional DETR) with mmengine's ``Runner``;
3. evaluate on the val split with mmdet's ``CocoMetric`` (summary and per-class AP) and write
   ``<work-dir>/metrics.json`` and the detections ``<work-dir>/results.bbox.json``;
4. draw a few val images, ground truth beside the prediction, upscaled, into ``<work-dir>/vis/``
   (score threshold: the one with the best F1 at IoU 0.5 on the val detections unless
   ``--score-thr`` is given);
5. draw the decoder cross-attention of the top detections of two of them (spatial / content /
   combined maps per head, the paper's Figure 4) into ``<work-dir>/attention/``.
"""
import argparse
import json
import time
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]

import torch

import cdetr_mmdet  # noqa: F401  (registers our modules and safe globals)
from cdetr_mmdet.data.synthetic_shapes import CLASSES, ensure_dataset
from mmengine.config import Config, DictAction
from mmengine.runner import Runner

DEFAULT_CONFIG = REPO / 'configs' / 'demo' / 'conditional_detr_r18_shapes.py'
# --quick: enough to run every step once, not to learn anything.
QUICK = dict(num_train=16, num_val=8, max_epochs=2, batch_size=4)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Command-line options; paths are relative to the current directory."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', default=str(DEFAULT_CONFIG), help='a configs/demo/ config')
    parser.add_argument('--work-dir', default=str(REPO / 'work_dirs' / 'demo'),
                        help='logs, checkpoints, metrics.json and vis/ (default: work_dirs/demo)')
    parser.add_argument('--data-root', default=str(REPO / 'data' / 'shapes'),
                        help='synthetic dataset root, generated if missing (default: data/shapes)')
    parser.add_argument('--max-epochs', type=int, help='training epochs (default: the config\'s); '
                        'the late lr drop moves with it')
    parser.add_argument('--num-train', type=int, default=2000, help='train images (default: 2000)')
    parser.add_argument('--num-val', type=int, default=200, help='val images (default: 200)')
    parser.add_argument('--num-vis', type=int, default=6, help='val images to draw (default: 6)')
    parser.add_argument('--score-thr', type=float,
                        help='drawing threshold (default: the best-F1 one on the val detections)')
    parser.add_argument('--num-attention', type=int, default=2,
                        help='val images whose attention maps are drawn (default: 2)')
    parser.add_argument('--seed', type=int, default=0, help='training seed (default: 0)')
    parser.add_argument('--quick', action='store_true',
                        help=f'tiny smoke run: {QUICK["num_train"]} train / {QUICK["num_val"]} val '
                        f'images, {QUICK["max_epochs"]} epochs of batch {QUICK["batch_size"]}')
    parser.add_argument('--threads', type=int, default=1,
                        help='torch compute threads (default: 1; see docs/demo.md)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys, e.g. optim_wrapper.optimizer.lr=5e-4')
    args = parser.parse_args(argv)
    if args.quick:
        args.num_train, args.num_val = QUICK['num_train'], QUICK['num_val']
        args.max_epochs = args.max_epochs or QUICK['max_epochs']
        args.num_vis = min(args.num_vis, QUICK['num_val'])
    return args


def set_max_epochs(cfg: Config, max_epochs: int) -> None:
    """Change the training length, scaling the epoch-based lr milestones with it."""
    old = cfg.train_cfg.max_epochs
    cfg.train_cfg.max_epochs = max_epochs
    cfg.train_cfg.val_interval = min(cfg.train_cfg.val_interval, max_epochs)
    cfg.default_hooks.checkpoint.interval = min(cfg.default_hooks.checkpoint.interval, max_epochs)
    for sched in cfg.param_scheduler:
        if sched.get('by_epoch', True):
            sched.end = max_epochs
            if 'milestones' in sched:
                sched.milestones = [max(1, round(m * max_epochs / old)) for m in sched.milestones]


def build_config(args: argparse.Namespace) -> Config:
    """The config file with this run's data root, work dir, length and seed."""
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    data_root = str(Path(args.data_root).resolve()) + '/'
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = data_root
    for evaluator in ('val_evaluator', 'test_evaluator'):
        cfg[evaluator].ann_file = data_root + 'annotations/instances_val.json'
    work_dir = Path(args.work_dir).resolve()
    cfg.work_dir = str(work_dir)
    # The final evaluation also writes its detections as a COCO results file.
    cfg.test_evaluator = dict(cfg.test_evaluator, outfile_prefix=str(work_dir / 'results'))
    cfg.randomness = dict(seed=args.seed)
    if args.max_epochs:
        set_max_epochs(cfg, args.max_epochs)
    if args.quick:
        cfg.train_dataloader.batch_size = QUICK['batch_size']
        cfg.default_hooks.logger.interval = 1
        for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
            cfg[loader].update(num_workers=0, persistent_workers=False)
    return cfg


def visualise(config: Path, checkpoint: str, images: List[str], ann_file: str, out_dir: Path,
              score_thr: float) -> List[Path]:
    """Ground truth beside the detections (score >= score_thr), 4x upscaled; returns the PNGs."""
    import mmcv
    from mmdet.apis import inference_detector

    from cdetr_mmdet.apis import init_detector  # strict weight loading
    from demo_pictures import (best_class_per_box, draw_gt_and_prediction,
                                                 gt_of_image)
    model = init_detector(str(config), checkpoint, device='cpu')
    classes = model.dataset_meta['classes']
    pngs = []
    for image in images:
        pred = inference_detector(model, image).pred_instances
        pred = pred[pred.scores >= score_thr]
        # One query's box listed under two classes is drawn once (best class).
        keep = best_class_per_box(pred.bboxes.numpy(), pred.labels.tolist(),
                                  pred.scores.tolist())
        gt_boxes, gt_labels = gt_of_image(ann_file, Path(image).name, classes)
        pngs.append(draw_gt_and_prediction(
            mmcv.imread(image, channel_order='rgb'), gt_boxes, gt_labels,
            pred.bboxes[keep].numpy(), pred.labels[keep].tolist(), pred.scores[keep].tolist(),
            classes, out_dir / 'vis' / Path(image).name,
            title=f'{Path(image).name}: detections with score >= {score_thr:.2f}'))
    return pngs


def draw_attention(config: Path, checkpoint: str, images: List[str], out_dir: Path) -> List[Path]:
    """The top-2 detections' cross-attention maps of each image (tools/vis_attention.py)."""
    from cdetr_mmdet.analysis.figures import draw_image_attention
    from cdetr_mmdet.apis import init_detector  # strict weight loading
    model = init_detector(str(config), checkpoint, device='cpu')
    pngs = []
    for image in images:
        pngs += draw_image_attention(model, image, out_dir, model.dataset_meta['classes'],
                                     top_k=2, log=lambda msg: None)
    return pngs


def choose_score_thr(results_file: Path, ann_file: str) -> Dict:
    """The drawing threshold with the best F1 (IoU 0.5) on the val detections, and its stats."""
    from demo_pictures import best_f1_threshold, stats_at, threshold_table
    table = threshold_table(str(results_file), ann_file)
    return dict(best_f1_threshold(table), at_0_3=stats_at(table, 0.3))


def main(argv: Optional[List[str]] = None) -> Dict[str, float]:
    """Run the demo; returns the COCO metrics."""
    args = parse_args(argv)
    start = time.perf_counter()
    torch.set_num_threads(args.threads)
    data = ensure_dataset(args.data_root, num_train=args.num_train, num_val=args.num_val)
    print(f'[demo] dataset {data["out_dir"]} ({"generated" if data["generated"] else "reused"}): '
          f'{data["counts"]}, classes {CLASSES}', flush=True)

    cfg = build_config(args)
    runner = Runner.from_cfg(cfg)
    work_dir = Path(runner.work_dir)
    config_file = work_dir / 'config.py'  # for tools/infer.py and tools/test.py
    cfg.dump(str(config_file))
    train_start = time.perf_counter()
    runner.train()
    train_s = time.perf_counter() - train_start

    print('[demo] final evaluation on the val split (CocoMetric)', flush=True)
    metrics = runner.test()
    metrics = {k: float(v) for k, v in metrics.items()}
    checkpoint = (work_dir / 'last_checkpoint').read_text().strip()
    summary = dict(metrics=metrics, train_seconds=round(train_s, 1), checkpoint=checkpoint,
                   config=str(config_file), max_epochs=cfg.train_cfg.max_epochs,
                   num_train=args.num_train, num_val=args.num_val)
    (work_dir / 'metrics.json').write_text(json.dumps(summary, indent=1))

    val_dir = Path(data['val_img_dir'])
    ann_file = cfg.test_evaluator['ann_file']
    if args.score_thr is None:
        chosen = choose_score_thr(work_dir / 'results.bbox.json', ann_file)
        score_thr = chosen['score_thr']
        summary['score_thr'] = chosen
        (work_dir / 'metrics.json').write_text(json.dumps(summary, indent=1))
        low = chosen['at_0_3']
        print(f'[demo] drawing threshold {score_thr:.2f}, the best F1 at IoU 0.5 on the val '
              f'detections: F1 {chosen["f1"]:.2f} (precision {chosen["precision"]:.2f}, recall '
              f'{chosen["recall"]:.2f}, {chosen["duplicates"]} duplicates); at 0.30: F1 '
              f'{low["f1"]:.2f}, {low["duplicates"]} duplicates', flush=True)
    else:
        score_thr = args.score_thr
    images = sorted(str(p) for p in val_dir.glob('*.png'))[:args.num_vis]
    pngs = visualise(config_file, checkpoint, images, ann_file, work_dir,
                     score_thr) if images else []
    attention = draw_attention(config_file, checkpoint, images[:args.num_attention],
                               work_dir / 'attention') if images else []
    total_s = time.perf_counter() - start
    print(f'[demo] bbox AP {metrics["coco/bbox_mAP"]:.3f}  AP50 {metrics["coco/bbox_mAP_50"]:.3f}  '
          f'AP75 {metrics["coco/bbox_mAP_75"]:.3f}  (training {train_s / 60:.1f} min, '
          f'total {total_s / 60:.1f} min)')
    print(f'[demo] metrics: {work_dir / "metrics.json"}')
    print(f'[demo] checkpoint: {checkpoint}')
    print(f'[demo] {len(pngs)} val images, ground truth | prediction (score >= {score_thr:.2f}), '
          f'in {work_dir / "vis"}:')
    for png in pngs:
        print(f'  {png}')
    print(f'[demo] {len(attention)} cross-attention maps (rows spatial / content / combined, '
          f'one column per head; tools/vis_attention.py) in {work_dir / "attention"}:')
    for png in attention:
        print(f'  {png}')
    return metrics


if __name__ == '__main__':
    main()
