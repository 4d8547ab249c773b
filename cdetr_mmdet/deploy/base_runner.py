"""What every deployed-model runner shares: config, preprocessing, results.

The pixels and the engines are ``cdetr_runtime``'s (``Preprocessor``, the
sessions of ``cdetr_runtime.backends``): a runner reads the preprocessing
from the config, the torch-free runtime from the file's metadata, and both
compute it with the same code.
"""
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from mmengine.config import Config

from cdetr_runtime import Preprocessor
from cdetr_runtime.backends import Session
from cdetr_runtime.preprocess import Image

from .model_info import check_config_matches, config_model_info, read_metadata


class DeployRunner:
    """Base class: run an exported Conditional DETR on images.

    Subclasses open the ONNX file as a ``cdetr_runtime`` session in
    :meth:`_load`. Preprocessing (the config's test ``Resize``, normalisation
    and padding) and post-processing (``score_thr``, boxes back to the
    original image as mmdet's ``predict(rescale=True)``) are done here.

    Args:
        model_path (str | Path): The ``.onnx`` file of tools/export_onnx.py.
        config (str | Path | Config): The config the model was trained with.
        num_threads (int, optional): CPU threads of the runtime; None for
            its default.
    """

    backend = 'base'

    def __init__(self, model_path: Union[str, Path],
                 config: Union[str, Path, Config],
                 num_threads: Optional[int] = None) -> None:
        self.model_path = str(model_path)
        self.meta = read_metadata(model_path)
        cfg = config if isinstance(config, Config) else Config.fromfile(
            str(config))
        config_name = getattr(cfg, 'filename', None) or str(config)
        check_config_matches(self.meta, cfg, self.model_path, config_name)
        info = config_model_info(cfg)
        self.preprocessor = Preprocessor(info)
        self.score_thr = info.score_thr
        self.classes = self.meta.get('classes', [])
        self.num_threads = num_threads
        self.session = self._load()
        # (batch, H, W) of the graph input; None where dynamic.
        self.input_shape: Tuple[Optional[int], ...] = self.session.input_shape

    def _load(self) -> Session:
        """Open ``self.model_path`` in this runner's engine."""
        raise NotImplementedError

    def infer(self, inputs: np.ndarray, mask: np.ndarray
              ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Run the graph on one preprocessed batch.

        Args:
            inputs (np.ndarray): (bs, 3, H, W) float32, normalised, padded.
            mask (np.ndarray): (bs, H, W) bool, True at padding.

        Returns:
            tuple: ``scores`` (bs, k), ``labels`` (bs, k) and ``boxes``
            (bs, k, 4) xyxy in input pixels.
        """
        return self.session.run(inputs, mask)

    def _run_batch(self, images: Sequence[Image], offset: int
                   ) -> List[Dict[str, np.ndarray]]:
        batch, pad_h, pad_w = self.input_shape
        pad_shape = (pad_h, pad_w) if pad_h and pad_w else None
        inputs, mask, metas = self.preprocessor(images, pad_shape, offset)
        num = len(images)
        if batch and num < batch:  # static batch: fill with copies
            fill = batch - num
            inputs = np.concatenate([inputs, np.repeat(inputs[:1], fill, 0)])
            mask = np.concatenate([mask, np.repeat(mask[:1], fill, 0)])
        scores, labels, boxes = self.infer(inputs, mask)
        results = []
        for i, meta in enumerate(metas):
            w_scale, h_scale = meta['scale_factor']
            bboxes = boxes[i] / np.array([w_scale, h_scale, w_scale,
                                          h_scale], np.float32)
            keep = scores[i] > self.score_thr
            results.append(dict(scores=scores[i][keep],
                                labels=labels[i][keep].astype(np.int64),
                                bboxes=bboxes[keep], **meta))
        return results

    def predict_arrays(self, images: Sequence[Image],
                       batch_size: Optional[int] = None
                       ) -> List[Dict[str, np.ndarray]]:
        """Detect; plain NumPy results.

        Args:
            images (Sequence[str | PathLike | np.ndarray]): Paths or
                (h, w, 3) uint8 BGR arrays, of any sizes.
            batch_size (int, optional): Images per graph run; default all at
                once (or the model's static batch size).

        Returns:
            list[dict]: Per image ``scores`` (k,), ``labels`` (k,),
            ``bboxes`` (k, 4) xyxy in original-image pixels (not clipped,
            as mmdet), and ``ori_shape``, ``img_shape``, ``scale_factor``.
        """
        if isinstance(images, (str, os.PathLike, np.ndarray)):
            images = [images]
        static_batch = self.input_shape[0]
        step = static_batch or batch_size or len(images)
        results = []
        for start in range(0, len(images), step):
            results += self._run_batch(images[start:start + step], start)
        return results

    def predict(self, images: Sequence[Image],
                batch_size: Optional[int] = None) -> list:
        """Detect; mmdet ``DetDataSample`` results (``pred_instances``).

        Args:
            images, batch_size: See :meth:`predict_arrays`.

        Returns:
            list[DetDataSample]: With metainfo ``ori_shape``, ``img_shape``,
            ``scale_factor`` and ``pred_instances`` (``bboxes``, ``scores``,
            ``labels`` tensors), as mmdet's detectors return them.
        """
        import torch
        from mmdet.structures import DetDataSample
        from mmengine.structures import InstanceData
        samples = []
        for res in self.predict_arrays(images, batch_size):
            sample = DetDataSample(metainfo=dict(
                ori_shape=res['ori_shape'], img_shape=res['img_shape'],
                scale_factor=res['scale_factor']))
            sample.pred_instances = InstanceData(
                bboxes=torch.from_numpy(res['bboxes']),
                scores=torch.from_numpy(res['scores']),
                labels=torch.from_numpy(res['labels']))
            samples.append(sample)
        return samples

    __call__ = predict
