"""The test pipeline of an export, in numpy + OpenCV: read, resize, normalise, pad.

Bit-exact with mmdet's test path (``LoadImageFromFile`` -> ``Resize`` ->
``DetDataPreprocessor``) because it calls the same OpenCV functions with the
same arguments as mmcv: ``cv2.imdecode(..., IMREAD_COLOR)`` (mmcv's
``imfrombytes``, BGR) and ``cv2.resize`` at the size mmcv's ``imrescale`` /
``imresize`` computes. Pillow's bilinear resize differs from OpenCV's (other
filter support and rounding), so Pillow would not reproduce the pixels.
"""
import os
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from .model_file import ModelInfo

try:
    import cv2
except ImportError as _err:  # say which package provides it
    raise ImportError(
        'cdetr_runtime needs OpenCV (the resize mmdet uses): pip install '
        'opencv-python-headless (or opencv-python), or pip install '
        "'.[runtime]' in the repository") from _err

Image = Union[str, os.PathLike, np.ndarray]
_CV2_INTERP = dict(nearest=cv2.INTER_NEAREST, bilinear=cv2.INTER_LINEAR,
                   bicubic=cv2.INTER_CUBIC, area=cv2.INTER_AREA,
                   lanczos=cv2.INTER_LANCZOS4)


class ImageError(ValueError):
    """An image that cannot be read or is not an (h, w, 3) uint8 array."""


def rescale_size(w: int, h: int, scale: Tuple[int, int]) -> Tuple[int, int]:
    """mmcv's ``rescale_size``: the (w, h) ``imrescale`` resizes to.

    The long edge fits ``max(scale)`` and the short edge ``min(scale)``,
    aspect ratio kept; rounding as mmcv's ``_scale_size`` (``int(x + 0.5)``).
    """
    factor = min(max(scale) / max(h, w), min(scale) / min(h, w))
    return int(w * float(factor) + 0.5), int(h * float(factor) + 0.5)


def load_image(image: Image, index: int = 0) -> np.ndarray:
    """A path read as mmdet's ``LoadImageFromFile`` (BGR), or a checked array.

    Args:
        image (str | PathLike | np.ndarray): A file path, or an (h, w, 3)
            uint8 BGR array (as ``cv2.imread`` gives).
        index (int): Position in the batch, for error messages.

    Returns:
        np.ndarray: (h, w, 3) uint8 BGR.

    Raises:
        FileNotFoundError: No such file.
        ImageError: The file is not an image OpenCV decodes, or the array has
            the wrong shape or dtype, or ``image`` is of another type.
    """
    if isinstance(image, (str, os.PathLike)):
        if not os.path.isfile(image):
            raise FileNotFoundError(f'image {index}: no such file: {image}')
        # mmcv reads bytes and decodes (imfrombytes), not cv2.imread.
        data = np.fromfile(image, np.uint8)
        array = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
        if array is None:
            raise ImageError(f'image {index}: cannot decode {image} (not an '
                             'image file OpenCV reads: PNG, JPEG, BMP, ...)')
        return array
    if not isinstance(image, np.ndarray):
        raise ImageError(
            f'image {index} is a {type(image).__name__}: expected a file path '
            'or an (h, w, 3) uint8 BGR numpy array')
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ImageError(
            f'image {index} has shape {image.shape} and dtype {image.dtype}: '
            'expected an (h, w, 3) uint8 BGR array (as cv2.imread gives; '
            'convert RGB with image[..., ::-1])')
    if 0 in image.shape:
        raise ImageError(f'image {index} is empty (shape {image.shape})')
    return image


class Preprocessor:
    """Resize, normalise and pad as the export's config did at test time.

    Args:
        info (ModelInfo): The export's metadata.
    """

    def __init__(self, info: ModelInfo) -> None:
        self.info = info
        self.mean = np.asarray(info.mean, np.float32)
        self.std = np.asarray(info.std, np.float32)

    def resize(self, image: np.ndarray
               ) -> Tuple[np.ndarray, Tuple[float, float]]:
        """Resize as mmdet's ``Resize``; returns (w_scale, h_scale) too."""
        info = self.info
        if info.resize_scale is None:
            return image, (1., 1.)
        h, w = image.shape[:2]
        if info.keep_ratio:
            size = rescale_size(w, h, info.resize_scale)
        else:
            size = tuple(info.resize_scale)
        resized = cv2.resize(image, size,
                             interpolation=_CV2_INTERP[info.interpolation])
        new_h, new_w = resized.shape[:2]
        # As mmdet: the factors of the rounded size, not of the scale.
        return resized, (new_w / w, new_h / h)

    def __call__(self, images: Sequence[Image],
                 pad_shape: Optional[Tuple[int, int]] = None,
                 offset: int = 0) -> Tuple[np.ndarray, np.ndarray,
                                           List[dict]]:
        """Preprocess a batch.

        Args:
            images (Sequence[str | PathLike | np.ndarray]): Paths or
                (h, w, 3) uint8 BGR arrays, of any sizes.
            pad_shape (tuple[int, int], optional): Pad to this (H, W) (a
                graph with a static size) instead of the batch maximum.
            offset (int): Index of the first image, for error messages.

        Returns:
            tuple: ``inputs`` (bs, 3, H, W) float32, ``mask`` (bs, H, W) bool
            (True at padding), and per image a dict with ``ori_shape``,
            ``img_shape`` (h, w) and ``scale_factor`` (w, h).
        """
        normed, metas = [], []
        for i, image in enumerate(images):
            image = load_image(image, offset + i)
            resized, scale_factor = self.resize(image)
            if self.info.bgr_to_rgb:
                resized = resized[..., ::-1]
            normed.append((resized.astype(np.float32) - self.mean) / self.std)
            metas.append(dict(ori_shape=image.shape[:2],
                              img_shape=resized.shape[:2],
                              scale_factor=scale_factor))
        max_h = max(m['img_shape'][0] for m in metas)
        max_w = max(m['img_shape'][1] for m in metas)
        div = self.info.pad_size_divisor
        pad_h, pad_w = -(-max_h // div) * div, -(-max_w // div) * div
        if pad_shape is not None:
            if pad_shape[0] < max_h or pad_shape[1] < max_w:
                raise ImageError(
                    f'resized images of up to {max_h}x{max_w} do not fit the '
                    f"model's static input size {pad_shape[0]}x{pad_shape[1]}"
                    ': export with --dynamic')
            pad_h, pad_w = pad_shape
        inputs = np.full((len(normed), 3, pad_h, pad_w), self.info.pad_value,
                         np.float32)
        mask = np.ones((len(normed), pad_h, pad_w), bool)
        for i, image in enumerate(normed):
            h, w = image.shape[:2]
            inputs[i, :, :h, :w] = image.transpose(2, 0, 1)
            mask[i, :h, :w] = False
        return inputs, mask, metas
