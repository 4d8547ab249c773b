"""The test pipeline of a config, in NumPy: load, resize, normalise, pad.

Reproduces what mmdet does before the model at test time (``Resize`` of the
test pipeline, then ``DetDataPreprocessor``), with the same mmcv image
functions, so a deployed model sees the same input as PyTorch.
"""
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import mmcv
import numpy as np
from mmengine.config import Config

Image = Union[str, np.ndarray]


def _test_pipeline(cfg: Config) -> list:
    """The test dataloader's pipeline, else ``cfg.test_pipeline``."""
    dataset = cfg.get('test_dataloader', {}).get('dataset', {})
    pipeline = dataset.get('pipeline', cfg.get('test_pipeline'))
    if pipeline is None:
        raise KeyError('the config has neither test_dataloader.dataset.'
                       'pipeline nor test_pipeline: cannot tell how to '
                       'resize images')
    return pipeline


@dataclass
class DeployPreprocessor:
    """Resize, normalise and pad images as a config's test pipeline does.

    Args:
        scale (tuple[int, int], optional): ``Resize.scale`` (w, h) of the
            test pipeline; None for no resize.
        keep_ratio (bool): ``Resize.keep_ratio``.
        mean (tuple[float]): Per-channel mean, in the model's channel order.
        std (tuple[float]): Per-channel std.
        bgr_to_rgb (bool): Swap BGR (mmcv's loading order) to RGB.
        pad_size_divisor (int): Pad the batch to a multiple of this.
        pad_value (float): Value of the padded pixels after normalisation.
        interpolation (str): ``Resize.interpolation`` (mmcv's cv2 names).
    """

    scale: Optional[Tuple[int, int]]
    keep_ratio: bool
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    bgr_to_rgb: bool
    pad_size_divisor: int = 1
    pad_value: float = 0.
    interpolation: str = 'bilinear'

    @classmethod
    def from_config(cls, cfg: Config) -> 'DeployPreprocessor':
        """Read the test ``Resize`` and ``model.data_preprocessor``.

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
                scale, keep_ratio = tuple(step['scale']), step.get(
                    'keep_ratio', False)
                interpolation = step.get('interpolation', 'bilinear')
            elif kind not in ('LoadImageFromFile', 'LoadImageFromNDArray',
                              'LoadAnnotations', 'PackDetInputs'):
                raise ValueError(
                    f'test pipeline step {step["type"]!r} is not supported '
                    'by the deploy preprocessing (supported: '
                    'LoadImageFromFile, Resize, LoadAnnotations, '
                    'PackDetInputs)')
        pre = cfg.model.get('data_preprocessor')
        if pre is None or 'mean' not in pre or 'std' not in pre:
            raise KeyError('model.data_preprocessor must give "mean" and '
                           '"std" for the deploy preprocessing')
        return cls(scale=scale, keep_ratio=keep_ratio,
                   mean=tuple(float(v) for v in pre['mean']),
                   std=tuple(float(v) for v in pre['std']),
                   bgr_to_rgb=bool(pre.get('bgr_to_rgb', False)),
                   pad_size_divisor=int(pre.get('pad_size_divisor', 1)),
                   pad_value=float(pre.get('pad_value', 0.)),
                   interpolation=interpolation)

    def load(self, image: Image, index: int = 0) -> np.ndarray:
        """Read a path (BGR, as ``LoadImageFromFile``) or check an array.

        Args:
            image (str | np.ndarray): A path or an (h, w, 3) BGR array.
            index (int): Position in the batch, for error messages.

        Returns:
            np.ndarray: (h, w, 3) BGR image.
        """
        if isinstance(image, str):
            array = mmcv.imread(image, flag='color', channel_order='bgr')
            if array is None:
                raise FileNotFoundError(f'cannot read image {image}')
            return array
        if (not isinstance(image, np.ndarray) or image.ndim != 3
                or image.shape[2] != 3):
            shape = getattr(image, 'shape', type(image).__name__)
            raise ValueError(
                f'image {index} has shape {shape}: expected an (h, w, 3) BGR '
                'array (as mmcv.imread gives) or a file path')
        return image

    def resize(self, image: np.ndarray
               ) -> Tuple[np.ndarray, Tuple[float, float]]:
        """Resize as mmdet's ``Resize``; returns (w_scale, h_scale) too."""
        h, w = image.shape[:2]
        if self.scale is None:
            return image, (1., 1.)
        if self.keep_ratio:
            resized = mmcv.imrescale(image, self.scale,
                                     interpolation=self.interpolation,
                                     backend='cv2')
        else:
            resized = mmcv.imresize(image, self.scale,
                                    interpolation=self.interpolation,
                                    backend='cv2')
        new_h, new_w = resized.shape[:2]
        return resized, (new_w / w, new_h / h)

    def __call__(self, images: Sequence[Image],
                 pad_shape: Optional[Tuple[int, int]] = None
                 ) -> Tuple[np.ndarray, np.ndarray, List[dict]]:
        """Preprocess a batch.

        Args:
            images (Sequence[str | np.ndarray]): Paths or (h, w, 3) BGR
                arrays, of any sizes.
            pad_shape (tuple[int, int], optional): Pad to this (H, W) (a
                model exported with a static size) instead of the batch
                maximum.

        Returns:
            tuple: ``inputs`` (bs, 3, H, W) float32, ``mask`` (bs, H, W)
            bool (True at padding), and per image a dict with
            ``ori_shape``, ``img_shape`` and ``scale_factor`` (w, h).
        """
        mean = np.asarray(self.mean, np.float32)
        std = np.asarray(self.std, np.float32)
        normed, metas = [], []
        for i, image in enumerate(images):
            image = self.load(image, i)
            resized, scale_factor = self.resize(image)
            if self.bgr_to_rgb:
                resized = resized[..., ::-1]
            normed.append((resized.astype(np.float32) - mean) / std)
            metas.append(dict(ori_shape=image.shape[:2],
                              img_shape=resized.shape[:2],
                              scale_factor=scale_factor))
        max_h = max(m['img_shape'][0] for m in metas)
        max_w = max(m['img_shape'][1] for m in metas)
        div = self.pad_size_divisor
        pad_h, pad_w = -(-max_h // div) * div, -(-max_w // div) * div
        if pad_shape is not None:
            if pad_shape[0] < max_h or pad_shape[1] < max_w:
                raise ValueError(
                    f'resized images of up to {max_h}x{max_w} do not fit the '
                    f'model\'s static input size {pad_shape[0]}x'
                    f'{pad_shape[1]}: export with --dynamic')
            pad_h, pad_w = pad_shape
        inputs = np.full((len(normed), 3, pad_h, pad_w), self.pad_value,
                         np.float32)
        mask = np.ones((len(normed), pad_h, pad_w), bool)
        for i, image in enumerate(normed):
            h, w = image.shape[:2]
            inputs[i, :, :h, :w] = image.transpose(2, 0, 1)
            mask[i, :h, :w] = False
        return inputs, mask, metas
