"""The test-time preprocessing a config describes, in the export's terms.

This module only *reads* the config: the test pipeline's ``Resize`` and
``model.data_preprocessor``, as the metadata keys of an export
(``resize_scale``, ``keep_ratio``, ...). The pixels are computed by
``cdetr_runtime.Preprocessor`` (numpy + OpenCV, the same calls as mmcv, so
bit-exact with mmdet's test path: tests/test_runtime_parity.py), for the
config-based runners as for the torch-free runtime: one implementation.
"""
from typing import Dict, Union

from mmengine.config import Config

# Steps of a test pipeline that do not change the pixels the model sees.
NO_PIXEL_CHANGE = ('LoadImageFromFile', 'LoadImageFromNDArray',
                   'LoadAnnotations', 'PackDetInputs', 'CdetrCheckImage')


def _test_pipeline(cfg: Config) -> list:
    """The test dataloader's pipeline, else ``cfg.test_pipeline``."""
    dataset = cfg.get('test_dataloader', {}).get('dataset', {})
    pipeline = dataset.get('pipeline', cfg.get('test_pipeline'))
    if pipeline is None:
        raise KeyError('the config has neither test_dataloader.dataset.'
                       'pipeline nor test_pipeline: cannot tell how to '
                       'resize images')
    return pipeline


def config_preprocessing(cfg: Config) -> Dict[str, Union[bool, int, float,
                                                       str, list, None]]:
    """Read the test ``Resize`` and ``model.data_preprocessor`` of a config.

    Args:
        cfg (Config): A full config (test pipeline and model).

    Returns:
        dict: ``resize_scale`` ([w, h] or None for no resize),
        ``keep_ratio``, ``interpolation`` (mmcv's cv2 name), ``mean``,
        ``std`` (per channel, model order), ``bgr_to_rgb``,
        ``pad_size_divisor``, ``pad_value``: the ``cdetr.*`` metadata keys
        ``cdetr_runtime.ModelInfo`` reads.

    Raises:
        KeyError: A key the preprocessing needs is missing.
        ValueError: The test pipeline holds a transform we cannot map.
    """
    scale, keep_ratio, interpolation = None, False, 'bilinear'
    for step in _test_pipeline(cfg):
        kind = step['type'].split('.')[-1]  # drop a scope ('mmdet.')
        if kind == 'Resize':
            if 'scale' not in step:
                raise KeyError('test pipeline Resize needs "scale" (the '
                               'deploy preprocessing does not support '
                               'scale_factor)')
            if step.get('backend', 'cv2') != 'cv2':
                # The runtimes resize with OpenCV, as mmcv's default.
                raise ValueError(
                    f'test pipeline Resize backend {step["backend"]!r} '
                    "is not supported by the deploy preprocessing (only "
                    "'cv2', mmcv's default)")
            scale = [int(v) for v in step['scale']]
            keep_ratio = bool(step.get('keep_ratio', False))
            interpolation = step.get('interpolation', 'bilinear')
        elif kind not in NO_PIXEL_CHANGE:
            raise ValueError(
                f'test pipeline step {step["type"]!r} is not supported '
                'by the deploy preprocessing (supported: Resize, '
                f'{", ".join(NO_PIXEL_CHANGE)})')
    pre = cfg.model.get('data_preprocessor')
    if pre is None or 'mean' not in pre or 'std' not in pre:
        raise KeyError('model.data_preprocessor must give "mean" and '
                       '"std" for the deploy preprocessing')
    return dict(resize_scale=scale, keep_ratio=keep_ratio,
                interpolation=interpolation,
                mean=[float(v) for v in pre['mean']],
                std=[float(v) for v in pre['std']],
                bgr_to_rgb=bool(pre.get('bgr_to_rgb', False)),
                pad_size_divisor=int(pre.get('pad_size_divisor', 1)),
                pad_value=float(pre.get('pad_value', 0.)))
