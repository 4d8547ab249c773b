"""Ablation for docs/convergence.md: mmdet's ConditionalDETR with the official init.

Trains mmdet 3.3's built-in ``ConditionalDETR`` exactly as
``benchmarks/convergence.py`` does (its config, data and seeds) but with the
two initialisation choices of the official code (and of ours): PyTorch's
default ``Conv2d`` init for the input projection and a zero last box layer.
If its curve then matches ours, the gap between ours and mmdet's built-in
model in the convergence benchmark comes from initialisation alone.

    python benchmarks/convergence.py --out-dir work_dirs/convergence   # data, backbone
    python benchmarks/convergence_init_ablation.py --seed 0 \\
        --benchmark-dir work_dirs/convergence --out-dir work_dirs/init_ablation

Writes ``OUT/seed<seed>/metrics.jsonl`` (epoch, AP, AP50 per epoch).
"""
import argparse
import json
import sys
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / 'configs/convergence/mmdet_conditional_detr_r18_shapes_d256.py'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--epochs', type=int, default=30)
    parser.add_argument('--benchmark-dir', type=Path, required=True,
                        help="convergence.py's --out-dir: its data/ and pretrain/backbone.pth")
    parser.add_argument('--out-dir', type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    sys.path.insert(0, str(REPO))
    import cdetr_mmdet  # noqa: F401
    from mmdet.models import ConditionalDETR
    from mmengine.config import Config
    from mmengine.hooks import Hook
    from mmengine.runner import Runner

    from convergence import configure_run  # the benchmark's own paths and schedule

    mmdet_init = ConditionalDETR.init_weights

    def official_init(self) -> None:
        mmdet_init(self)
        for module in self.neck.modules():
            if isinstance(module, nn.Conv2d):
                module.reset_parameters()
        nn.init.constant_(self.bbox_head.fc_reg.weight, 0.)
        nn.init.constant_(self.bbox_head.fc_reg.bias, 0.)

    ConditionalDETR.init_weights = official_init

    work_dir = (args.out_dir / f'seed{args.seed}').resolve()
    cfg = Config.fromfile(str(CONFIG))
    configure_run(cfg, args.benchmark_dir.resolve(), work_dir, args.seed, args.epochs,
                  eval_interval=1)

    class Recorder(Hook):
        def after_val_epoch(self, runner, metrics=None):
            with open(work_dir / 'metrics.jsonl', 'a') as f:
                f.write(json.dumps(dict(
                    epoch=runner.epoch, AP=float(metrics['coco/bbox_mAP']),
                    AP50=float(metrics['coco/bbox_mAP_50']))) + '\n')

    runner = Runner.from_cfg(cfg)
    runner.register_hook(Recorder())
    runner.train()


if __name__ == '__main__':
    main()
