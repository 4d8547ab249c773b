"""The config of a train / test run, resolved as mmdet's tools do.

The command-line parsing is the tools' own (``tools/run_args.py``).
"""
import os.path as osp
from typing import Optional

from mmengine.config import Config

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
