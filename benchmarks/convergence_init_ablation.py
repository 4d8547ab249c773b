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

Writes ``OUT/seed<seed>/metrics.jsonl`` with the convergence benchmark's own
``MetricsRecorder`` (per epoch: cumulative train seconds, AP, AP50, AP75).
"""
import argparse
from pathlib import Path
from typing import List, Optional

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / 'configs/convergence/mmdet_conditional_detr_r18_shapes_d256.py'


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--epochs', type=int, default=30)
    parser.add_argument('--benchmark-dir', type=Path, required=True,
                        help="convergence.py's --out-dir: its data/ and pretrain/backbone.pth")
    parser.add_argument('--out-dir', type=Path, required=True)
    return parser.parse_args(argv)


def use_official_init() -> None:
    """Make mmdet's ``ConditionalDETR.init_weights`` end as the official code's init does."""
    from mmdet.models import ConditionalDETR
    mmdet_init = ConditionalDETR.init_weights

    def official_init(self) -> None:
        mmdet_init(self)
        for module in self.neck.modules():
            if isinstance(module, nn.Conv2d):
                module.reset_parameters()
        nn.init.constant_(self.bbox_head.fc_reg.weight, 0.)
        nn.init.constant_(self.bbox_head.fc_reg.bias, 0.)

    ConditionalDETR.init_weights = official_init


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    import cdetr_mmdet  # noqa: F401
    from mmengine.config import Config
    from mmengine.runner import Runner

    # The benchmark's own paths, schedule and metrics hook.
    from convergence import MetricsRecorder, configure_run

    use_official_init()
    work_dir = (args.out_dir / f'seed{args.seed}').resolve()
    cfg = Config.fromfile(str(CONFIG))
    configure_run(cfg, args.benchmark_dir.resolve(), work_dir, args.seed, args.epochs,
                  eval_interval=1)
    runner = Runner.from_cfg(cfg)
    runner.register_hook(MetricsRecorder(work_dir / 'metrics.jsonl'))
    runner.train()


if __name__ == '__main__':
    main()
