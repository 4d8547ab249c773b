"""End-to-end demo: synthetic data -> training -> COCO evaluation -> drawn detections.

    python tools/demo.py                 # the full demo, ~10 min of training on 2 CPU cores
    python tools/demo.py --quick         # a tiny run (CI): a handful of images, a few iterations

Steps:
1. generate the synthetic shapes dataset under ``--data-root`` unless it is already there;
2. train the config (default: our Conditional DETR) with mmengine's ``Runner``;
3. evaluate on the val split with mmdet's ``CocoMetric`` (summary and per-class AP) and write
   ``<work-dir>/metrics.json`` and the detections ``<work-dir>/results.bbox.json``;
4. run ``DetInferencer`` on a few val images and write PNGs to ``<work-dir>/vis/``.
"""
import argparse
import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a source checkout without installing

import torch  # noqa: E402

import cdetr_mmdet  # noqa: E402,F401  (registers our modules and safe globals)
from cdetr_mmdet.data.synthetic_shapes import CLASSES, ensure_dataset  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

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
    parser.add_argument('--score-thr', type=float, default=0.3, help='drawing threshold (default: 0.3)')
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


def visualise(config: Path, checkpoint: str, images: List[str], out_dir: Path,
              score_thr: float) -> List[Path]:
    """Draw detections (boxes, class names, scores) with ``DetInferencer``; returns the PNGs."""
    from cdetr_mmdet.apis import CdetrDetInferencer  # strict weight loading
    inferencer = CdetrDetInferencer(model=str(config), weights=checkpoint, device='cpu',
                                    show_progress=False)
    inferencer(images, out_dir=str(out_dir), pred_score_thr=score_thr, no_save_pred=False)
    return [out_dir / 'vis' / Path(img).name for img in images]


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
    images = sorted(str(p) for p in val_dir.glob('*.png'))[:args.num_vis]
    pngs = visualise(config_file, checkpoint, images, work_dir, args.score_thr) if images else []
    total_s = time.perf_counter() - start
    print(f'[demo] bbox AP {metrics["coco/bbox_mAP"]:.3f}  AP50 {metrics["coco/bbox_mAP_50"]:.3f}  '
          f'AP75 {metrics["coco/bbox_mAP_75"]:.3f}  (training {train_s / 60:.1f} min, '
          f'total {total_s / 60:.1f} min)')
    print(f'[demo] metrics: {work_dir / "metrics.json"}')
    print(f'[demo] checkpoint: {checkpoint}')
    print(f'[demo] {len(pngs)} drawn val images (score >= {args.score_thr}) in {work_dir / "vis"}:')
    for png in pngs:
        print(f'  {png}')
    return metrics


if __name__ == '__main__':
    main()
