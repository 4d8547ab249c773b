"""Train a detector: mmdet 3.3's tools/train.py with cdetr_mmdet imported.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp]
"""
import argparse

import torch
from mmdet.utils import setup_cache_size_limit_of_dynamo
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

import cdetr_mmdet  # noqa: F401  (registers our modules and safe globals)
from cdetr_mmdet.engine import load_run_config
from run_args import add_run_arguments, parse_run_args


def parse_args():
    parser = argparse.ArgumentParser(description='Train a detector')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--amp',
        action='store_true',
        default=False,
        help='enable automatic-mixed-precision training')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='enable automatically scaling LR.')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='If specify checkpoint path, resume from it, while if not '
        'specify, try to auto resume from the latest checkpoint '
        'in the work directory.')
    add_run_arguments(parser)
    return parse_run_args(parser)


def main():
    args = parse_args()

    # Reduce the number of repeated compilations and improve training speed.
    setup_cache_size_limit_of_dynamo()

    cfg = load_run_config(args.config, args.launcher, args.cfg_options,
                          args.work_dir)

    if args.amp and torch.cuda.is_available():
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
    elif args.amp:  # mmengine's AmpOptimWrapper refuses CPU: bf16 autocast
        cfg.optim_wrapper.type = 'CdetrCPUAmpOptimWrapper'

    if args.auto_scale_lr:
        if 'auto_scale_lr' in cfg and \
                'enable' in cfg.auto_scale_lr and \
                'base_batch_size' in cfg.auto_scale_lr:
            cfg.auto_scale_lr.enable = True
        else:
            raise RuntimeError('Can not find "auto_scale_lr" or '
                               '"auto_scale_lr.enable" or '
                               '"auto_scale_lr.base_batch_size" in your'
                               ' configuration file.')

    # Strict checkpoint loading even for configs that do not inherit
    # configs/_base_/default_runtime.py.
    if cfg.get('default_hooks') is None:
        cfg.default_hooks = dict()
    cfg.default_hooks.setdefault('strict_load',
                                 dict(type='CdetrStrictLoadHook'))
    # resume is determined in this priority: resume from > auto_resume
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume

    if 'runner_type' not in cfg:
        runner = Runner.from_cfg(cfg)
    else:  # a customized runner from the registry
        runner = RUNNERS.build(cfg)

    runner.train()


if __name__ == '__main__':
    main()
