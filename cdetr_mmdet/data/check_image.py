"""Test-pipeline checks, so mmdet's own inference API names bad inputs too.

mmdet's ``inference_detector`` and ``DetInferencer`` run the config's test
pipeline: ``inference_detector`` swaps its first step for
``LoadImageFromNDArray`` when given arrays, ``DetInferencer`` swaps the
``LoadImageFromFile`` step for ``InferencerLoader`` (which loads files and
arrays), keeping that step's arguments. Our test pipelines therefore check in
two places that survive both swaps, with the rules of
:mod:`cdetr_mmdet.apis.inputs` (one place for each rule):

- the loader's ``backend_args=dict(backend='cdetr_checked_local')``
  (:class:`CheckedImageBackend`): a file must exist, be non-empty and have a
  readable image header before OpenCV decodes it (else an OpenCV assertion
  that names no file);
- ``CdetrCheckImage`` right after the loader: the loaded array (file or
  numpy input) must be ``(H, W, 3)`` (grayscale repeated), uint8 or 0-255
  floats (a ``[0, 1]`` float array is refused: it would run to wrong scores),
  and keep both sides >= 1 px at the ``Resize`` that follows.
"""
from pathlib import Path
from typing import Optional, Sequence, Union

from mmcv.transforms import BaseTransform
from mmdet.registry import TRANSFORMS
from mmengine.config import ConfigDict
from mmengine.fileio import register_backend
from mmengine.fileio.backends import LocalBackend

__all__ = ['CdetrCheckImage', 'CheckedImageBackend']


@register_backend('cdetr_checked_local')
class CheckedImageBackend(LocalBackend):
    """``LocalBackend`` whose ``get`` refuses what is not an image file.

    Raises :class:`~cdetr_mmdet.apis.InputError` naming the path (missing,
    0 bytes, unreadable header, empty image), as ``cdetr_mmdet.apis`` does.
    """

    def get(self, filepath: Union[str, Path]) -> bytes:
        """The file's bytes, once it is known to be an image file."""
        # Imported here: cdetr_mmdet.apis imports mmdet.apis, which needs
        # the registries this package fills at import.
        from ..apis.inputs import check_image_input
        check_image_input(str(filepath), 'input')
        return super().get(filepath)


@TRANSFORMS.register_module()
class CdetrCheckImage(BaseTransform):
    """Check the loaded image of a test pipeline (file or array input).

    Place it right after the loading step and give it the scale of the
    ``Resize`` that follows (the transform cannot see the pipeline).

    Required keys: ``img``. Modified keys: ``img`` (grayscale repeated to 3
    channels), ``img_shape``, ``ori_shape`` (when present).

    Args:
        scale (tuple[int, int], optional): The following ``Resize``'s scale;
            None skips the resized-size check. Defaults to None.
        keep_ratio (bool): That ``Resize``'s ``keep_ratio``. Defaults to
            True.
    """

    def __init__(self, scale: Optional[Sequence[int]] = None,
                 keep_ratio: bool = True) -> None:
        self.scale = None if scale is None else tuple(scale)
        self.keep_ratio = keep_ratio

    def transform(self, results: dict) -> dict:
        """Raise ``InputError`` for an unusable image, else pass it on.

        Args:
            results (dict): The loader's output: ``img`` and ``img_path``
                (None for array inputs).

        Returns:
            dict: ``results``, with a 3-channel ``img``.
        """
        from ..apis.inputs import check_image_input  # see CheckedImageBackend
        cfg = ConfigDict(test_pipeline=[] if self.scale is None else [dict(
            type='Resize', scale=self.scale, keep_ratio=self.keep_ratio)])
        path = results.get('img_path')
        if path is not None:  # a decoded file: the file rules, its name
            check_image_input(path, 'input', cfg)
            return results
        img = check_image_input(results['img'], 'input', cfg)
        results['img'] = img
        results['img_shape'] = img.shape[:2]
        if 'ori_shape' in results:
            results['ori_shape'] = img.shape[:2]
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(scale={self.scale}, '
                f'keep_ratio={self.keep_ratio})')
