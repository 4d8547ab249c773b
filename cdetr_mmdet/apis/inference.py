"""Inference entry points that load checkpoints strictly and safely.

mmdet's ``init_detector`` and ``DetInferencer`` load with ``strict=False``: a
checkpoint of another architecture or class count gives a random model and
only a log line. These load the same way but refuse a checkpoint that does
not fit the model (:class:`~cdetr_mmdet.checkpoint.CheckpointMismatchError`, with
the counts and the first offenders) and refuse unsafe pickles
(:class:`~cdetr_mmdet.checkpoint.UnsafeCheckpointError`).
"""
import warnings
from pathlib import Path
from typing import Any, Optional, Union

import torch
from mmdet.apis import DetInferencer
from mmdet.apis import init_detector as mmdet_init_detector
from mmengine.config import Config

from ..checkpoint import load_state_dict_strictly, safe_torch_load
from ..checkpoint.state_dict_check import match_state_dict, strip_prefixes
from .inputs import check_image_input
from .optimize import optimize_for_inference

__all__ = ['CdetrDetInferencer', 'init_detector']


def init_detector(config: Union[str, Path, Config],
                  checkpoint: Optional[str] = None,
                  palette: str = 'none',
                  device: str = 'cpu',
                  cfg_options: Optional[dict] = None,
                  optimize: bool = False) -> torch.nn.Module:
    """``mmdet.apis.init_detector`` with a strict, weights-only load.

    Args:
        config (str | Path | Config): The model config.
        checkpoint (str, optional): The checkpoint; None keeps random weights
            (and COCO class names, as mmdet does).
        palette (str): As in mmdet. Defaults to 'none'.
        device (str): Where the model goes. Defaults to 'cpu'.
        cfg_options (dict, optional): Config overrides.
        optimize (bool): Fold the backbone's batch norms into its
            convolutions and run it channels-last (our detector), see
            :func:`~cdetr_mmdet.apis.optimize.optimize_for_inference`: faster
            prediction, equal up to float rounding, no training. Defaults to
            False.

    Returns:
        nn.Module: The detector in eval mode, with ``cfg`` and
        ``dataset_meta`` set as mmdet sets them.

    Raises:
        CheckpointMismatchError: The checkpoint does not fit the model.
        UnsafeCheckpointError: The checkpoint pickles code.
    """
    if checkpoint is None:
        model = mmdet_init_detector(config, None, palette, device, cfg_options)
        return _optimized(model) if optimize else model
    with warnings.catch_warnings():  # mmdet's "checkpoint is None" notice
        warnings.simplefilter('ignore')
        model = mmdet_init_detector(config, None, palette, 'cpu', cfg_options)
    loaded = safe_torch_load(checkpoint, map_location='cpu')
    load_state_dict_strictly(model, loaded, str(checkpoint))
    meta = loaded.get('meta', {}).get('dataset_meta')
    if meta is not None:
        config_palette = model.dataset_meta.get('palette')
        model.dataset_meta = {k.lower(): v for k, v in meta.items()}
        # Priority as in mmdet: argument, config, checkpoint, random.
        if palette != 'none' or config_palette != 'random' or \
                'palette' not in model.dataset_meta:
            model.dataset_meta['palette'] = config_palette
    else:
        warnings.warn(f'{checkpoint} has no dataset_meta: COCO class names '
                      'are used')
    model = model.to(device).eval()
    return _optimized(model) if optimize else model


def _optimized(model: torch.nn.Module) -> torch.nn.Module:
    """Folded, and channels-last where the detector has that option."""
    return optimize_for_inference(model, channels_last=hasattr(model, 'channels_last'))


class CdetrDetInferencer(DetInferencer):
    """mmdet's ``DetInferencer`` with strict weights (see module docstring) and
    every input checked by :func:`~cdetr_mmdet.apis.inputs.check_image_input`.

    Args:
        *args, **kwargs: mmdet ``DetInferencer``'s (``model``, ``weights``,
            ``device``, ...).
        optimize (bool): As in :func:`init_detector`. Defaults to False.
    """

    def __init__(self, *args, optimize: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if optimize:
            _optimized(self.model)

    def _inputs_to_list(self, inputs: Any) -> list:
        """mmdet's list (a folder expands to its images), each input checked."""
        inputs = super()._inputs_to_list(inputs)
        return [check_image_input(x, f'input[{i}]' if len(inputs) > 1 else 'input', self.cfg)
                for i, x in enumerate(inputs)]

    def _load_weights_to_model(self, model: torch.nn.Module,
                               checkpoint: Optional[dict],
                               cfg: Optional[Config]) -> None:
        if checkpoint is not None:  # mmdet's method then loads and sets meta
            state = strip_prefixes(checkpoint.get('state_dict', checkpoint))
            match_state_dict(model.state_dict(), state, 'the weights')
        super()._load_weights_to_model(model, checkpoint, cfg)
