"""Test (and evaluate) a detector: mmdet 3.3's tools/test.py with cdetr_mmdet.

    python tools/test.py CONFIG CHECKPOINT [--out results.pkl] [--show-dir DIR]
"""
import argparse
import warnings
from copy import deepcopy

from mmdet.engine.hooks.utils import trigger_visualization_hook
from mmdet.evaluation import DumpDetResults
from mmdet.registry import RUNNERS
from mmdet.utils import setup_cache_size_limit_of_dynamo
from mmengine import ConfigDict
from mmengine.runner import Runner

import cdetr_mmdet  # noqa: F401  (registers our modules and safe globals)
from cdetr_mmdet.engine import load_run_config
from run_args import add_run_arguments, parse_run_args


def parse_args():
    parser = argparse.ArgumentParser(
        description='MMDet test (and eval) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--work-dir',
        help='the directory to save the file containing evaluation metrics')
    parser.add_argument(
        '--out',
        type=str,
        help='dump predictions to a pickle file for offline evaluation')
    parser.add_argument(
        '--show', action='store_true', help='show prediction results')
    parser.add_argument(
        '--show-dir',
        help='directory where painted images will be saved. '
        'If specified, it will be automatically saved '
        'to the work_dir/timestamp/show_dir')
    parser.add_argument(
        '--wait-time', type=float, default=2, help='the interval of show (s)')
    parser.add_argument(
        '--tta', action='store_true', help='enable test-time augmentation')
    parser.add_argument(
        '--optimize', action='store_true',
        help='fold the backbone batch norms into the convolutions and run it '
        'channels-last (cdetr_mmdet.apis.optimize_for_inference): faster, '
        'equal results up to float rounding')
    add_run_arguments(parser)
    return parse_run_args(parser)


def add_tta(cfg):
    """Wrap ``cfg.model`` for test-time augmentation (flip by default)."""
    if 'tta_model' not in cfg:
        warnings.warn('Cannot find ``tta_model`` in config, '
                      'we will set it as default.')
        cfg.tta_model = dict(
            type='DetTTAModel',
            tta_cfg=dict(
                nms=dict(type='nms', iou_threshold=0.5), max_per_img=100))
    if 'tta_pipeline' not in cfg:
        warnings.warn('Cannot find ``tta_pipeline`` in config, '
                      'we will set it as default.')
        test_data_cfg = cfg.test_dataloader.dataset
        while 'dataset' in test_data_cfg:
            test_data_cfg = test_data_cfg['dataset']
        cfg.tta_pipeline = deepcopy(test_data_cfg.pipeline)
        flip_tta = dict(
            type='TestTimeAug',
            transforms=[
                [
                    dict(type='RandomFlip', prob=1.),
                    dict(type='RandomFlip', prob=0.)
                ],
                [
                    dict(
                        type='PackDetInputs',
                        meta_keys=('img_id', 'img_path', 'ori_shape',
                                   'img_shape', 'scale_factor', 'flip',
                                   'flip_direction'))
                ],
            ])
        cfg.tta_pipeline[-1] = flip_tta
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline


def main():
    args = parse_args()

    # Reduce the number of repeated compilations and improve testing speed.
    setup_cache_size_limit_of_dynamo()

    cfg = load_run_config(args.config, args.launcher, args.cfg_options,
                          args.work_dir)

    cfg.load_from = args.checkpoint
    # Strict checkpoint loading even for configs that do not inherit
    # configs/_base_/default_runtime.py.
    if cfg.get('default_hooks') is None:
        cfg.default_hooks = dict()
    cfg.default_hooks.setdefault('strict_load',
                                 dict(type='CdetrStrictLoadHook'))
    # Testing loads every tensor: CdetrStrictLoadHook (default_runtime)
    # refuses a checkpoint that does not fit; fine-tuning skips don't apply.
    cfg.pop('load_from_skip', None)

    if args.show or args.show_dir:
        cfg = trigger_visualization_hook(cfg, args)

    if args.tta:
        add_tta(cfg)
    if args.optimize:
        cfg.custom_hooks = list(cfg.get('custom_hooks') or []) + [
            dict(type='CdetrInferenceOptimizeHook')]

    if 'runner_type' not in cfg:
        runner = Runner.from_cfg(cfg)
    else:  # a customized runner from the registry
        runner = RUNNERS.build(cfg)

    if args.out is not None:
        assert args.out.endswith(('.pkl', '.pickle')), \
            'The dump file must be a pkl file.'
        runner.test_evaluator.metrics.append(
            DumpDetResults(out_file_path=args.out))

    runner.test()


if __name__ == '__main__':
    main()
