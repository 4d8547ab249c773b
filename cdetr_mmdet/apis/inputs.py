"""Inference inputs checked before mmdet sees them: every error names the input.

mmdet's ``inference_detector`` and ``DetInferencer`` fail on a zero-byte file or a 4000x1 image
with OpenCV assertions that name no file, raise ``IndexError`` on a grayscale array, and run a
float array in ``[0, 1]`` (the model expects 0-255) to wrong scores without a word. Here:

- a file must exist, be non-empty and have a readable image header;
- an image must keep both sides >= 1 px after the config's test-pipeline ``Resize``;
- arrays are ``(H, W, 3)`` BGR (as ``cv2.imread`` gives); a grayscale ``(H, W)`` or ``(H, W, 1)``
  array is repeated to 3 channels; ``uint8`` is used as is, a float array as 0-255 pixel values if
  its values lie in ``[0, 255]`` and exceed 1; a float array within ``[0, 1]``, one with NaN/inf,
  another dtype, shape or channel count is an error saying what was expected.
"""
import os
from pathlib import Path
from typing import Any, List, Sequence, Union

import numpy as np
from mmdet.apis import inference_detector as _mmdet_inference_detector
from PIL import Image

from ..data.dataset_check_config import input_scale

ImageInput = Union[str, Path, np.ndarray]


class InputError(ValueError):
    """An inference input that the model cannot use as given; the message names it."""


def _test_pipeline(cfg: Any) -> Sequence[dict]:
    """The config's test pipeline (mmdet's ``get_test_pipeline_cfg`` order), or ``[]``."""
    try:
        return cfg.test_dataloader.dataset.pipeline
    except AttributeError:
        try:
            return cfg.test_pipeline
        except AttributeError:
            return []


def _check_size(name: str, width: int, height: int, pipeline: Sequence[dict]) -> None:
    """Both sides >= 1 px before and after the test pipeline's resize (mmcv's rounding)."""
    if width < 1 or height < 1:
        raise InputError(f'{name} is {width}x{height} (w x h): empty image; expected both sides '
                         '>= 1 px')
    resize = input_scale(pipeline)
    if resize is None or not resize[1]:
        return
    scale = resize[0]
    factor = min(max(scale) / max(width, height), min(scale) / min(width, height))
    new_w, new_h = int(width * factor + 0.5), int(height * factor + 0.5)
    if new_w < 1 or new_h < 1:
        raise InputError(
            f'{name} is {width}x{height} (w x h): the test pipeline resizes it (scale {scale}, '
            f'keep_ratio=True) to {new_w}x{new_h}; expected an image whose sides stay >= 1 px '
            f'(aspect ratio at most {max(scale)}:1 at this scale)')


def _check_file(path: Union[str, Path], name: str, pipeline: Sequence[dict]) -> str:
    """The path as a string, if it is a non-empty file with a readable image header."""
    path = str(path)
    if not os.path.isfile(path):
        raise InputError(f'{name}: no such image file: {path}')
    if os.path.getsize(path) == 0:
        raise InputError(f'{name}: {path} is an empty file (0 bytes); expected an image file '
                         '(PNG, JPEG, ...)')
    try:
        with Image.open(path) as im:
            width, height = im.size
    except Exception as e:  # PIL raises several types for undecodable headers
        raise InputError(f'{name}: {path} is not a readable image ({type(e).__name__}: {e}); '
                         'expected an image file (PNG, JPEG, ...)') from None
    _check_size(f'{name} ({path})', width, height, pipeline)
    return path


def _check_array(img: np.ndarray, name: str, pipeline: Sequence[dict]) -> np.ndarray:
    """A ``(H, W, 3)`` uint8 or 0-255 float BGR array, grayscale repeated to 3 channels."""
    what = f'{name} (numpy array of shape {tuple(img.shape)}, dtype {img.dtype})'
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[2] not in (1, 3):
        raise InputError(f'{what} looks channels-first; expected (H, W, 3) BGR, e.g. '
                         'img.transpose(1, 2, 0)')
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (1, 3)):
        raise InputError(f'{what}: expected an (H, W, 3) BGR image (or (H, W) / (H, W, 1) '
                         'grayscale); pass several images as a list, drop alpha with img[..., :3]')
    _check_size(what, img.shape[1], img.shape[0], pipeline)
    if np.issubdtype(img.dtype, np.floating):
        if not np.isfinite(img).all():
            raise InputError(f'{what} holds NaN or inf; expected pixel values in 0-255')
        low, high = float(img.min()), float(img.max())
        if high <= 1.0:
            raise InputError(
                f'{what} has values in [{low:g}, {high:g}]: the model expects 0-255 pixel values '
                '(as cv2.imread gives); convert with (img * 255).round().astype(np.uint8)')
        if low < 0 or high > 255:
            raise InputError(f'{what} has values in [{low:g}, {high:g}]; expected 0-255 pixel '
                             'values')
    elif img.dtype != np.uint8:
        raise InputError(f'{what}: expected dtype uint8 (0-255 BGR, as cv2.imread gives) or a '
                         'float array of 0-255 values')
    if img.ndim == 2:
        img = img[:, :, None]
    if img.shape[2] == 1:  # grayscale: the model takes 3 channels
        img = np.repeat(img, 3, axis=2)
    return img


def check_image_input(img: Any, name: str = 'input', cfg: Any = None) -> ImageInput:
    """Check one inference input; returns it, or the converted array.

    Args:
        img: an image file path or a numpy array (see the module docstring).
        name: how errors call it, e.g. ``'input[2]'``.
        cfg: the model's config (``model.cfg``), whose test pipeline's ``Resize`` is checked.

    Raises:
        InputError: with the input's name and what was expected.
    """
    pipeline = _test_pipeline(cfg) if cfg is not None else []
    if isinstance(img, (str, Path)):
        return _check_file(img, name, pipeline)
    if isinstance(img, np.ndarray):
        return _check_array(img, name, pipeline)
    raise InputError(f'{name} is a {type(img).__name__}; expected an image file path or an '
                     '(H, W, 3) uint8 BGR numpy array')


def inference_detector(model, imgs: Union[ImageInput, Sequence[ImageInput]], *args, **kwargs):
    """mmdet's ``inference_detector`` after :func:`check_image_input` on every image."""
    if isinstance(imgs, (list, tuple)):
        checked: List[ImageInput] = [check_image_input(x, f'input[{i}]', model.cfg)
                                     for i, x in enumerate(imgs)]
        if len({isinstance(x, np.ndarray) for x in checked}) > 1:  # mmdet picks one loader
            return [_mmdet_inference_detector(model, x, *args, **kwargs) for x in checked]
        return _mmdet_inference_detector(model, checked, *args, **kwargs)
    return _mmdet_inference_detector(model, check_image_input(imgs, 'input', model.cfg),
                                     *args, **kwargs)

