"""Command line and config of a train / test run, resolved as mmdet's tools do."""
import argparse
import os
import os.path as osp
from typing import Optional

from mmengine.config import Config, DictAction

from .cpu_ddp import setup_cpu_distributed


def load_run_config(config: str, launcher: str, cfg_options: Optional[dict] = None,
                    work_dir: Optional[str] = None) -> Config:
    """Load ``config`` for ``tools/train.py`` and ``tools/test.py``.

    Args:
        config (str): Config file.
        launcher (str): The ``--launcher`` argument; on CPU, ``pytorch`` gets gloo and a
            CPU DDP wrapper (:func:`setup_cpu_distributed`).
        cfg_options (dict, optional): ``--cfg-options``, merged into the config.
        work_dir (str, optional): ``--work-dir``; else the config's, else
            ``./work_dirs/<config file name>``.

    Returns:
        Config: The run's config.
    """
    cfg = Config.fromfile(config)
    cfg.launcher = launcher
    # mmengine's own init needs CUDA; on CPU use gloo and a CPU DDP wrapper.
    setup_cpu_distributed(cfg, launcher)
    if cfg_options is not None:
        cfg.merge_from_dict(cfg_options)
    # work_dir is determined in this priority: CLI > config > config filename
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config))[0])
    return cfg


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """``--cfg-options``, ``--launcher`` and ``--local_rank``, shared by train and test."""
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override some settings in the used config, the key-value pair '
        'in xxx=yyy format will be merged into config file. If the value to '
        'be overwritten is a list, it should be like key="[a,b]" or key=a,b '
        'It also allows nested list/tuple values, e.g. key="[(a,b),(c,d)]" '
        'Note that the quotation marks are necessary and that no white space '
        'is allowed.')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    # torchrun sets LOCAL_RANK; torch.distributed.launch passes --local-rank.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def parse_run_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse the command line; export ``--local_rank`` as ``LOCAL_RANK`` unless set."""
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args
