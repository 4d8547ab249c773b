"""``Detector``: an exported Conditional DETR on images, no PyTorch needed."""
import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from .backends import open_session
from .model_file import read_model_info
from .preprocess import Image, Preprocessor


@dataclass
class Detections:
    """One image's detections, boxes in original-image pixels.

    Attributes:
        boxes (np.ndarray): (n, 4) float32 xyxy, not clipped (as mmdet).
        scores (np.ndarray): (n,) float32, best first.
        labels (np.ndarray): (n,) int64 class indices.
        class_names (list[str]): Name of each detection's class.
        image_size (tuple[int, int]): (h, w) of the original image.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    class_names: List[str]
    image_size: Tuple[int, int]

    def to_dict(self) -> dict:
        """JSON-ready: ``height``, ``width`` and a list of detections."""
        return dict(height=int(self.image_size[0]),
                    width=int(self.image_size[1]),
                    detections=[dict(label=int(label), class_name=name,
                                     score=float(score),
                                     box=[float(v) for v in box])
                                for box, score, label, name in zip(
                                    self.boxes, self.scores, self.labels,
                                    self.class_names)])


class Detector:
    """Run a model written by tools/export_onnx.py.

    Everything but the weights comes from the file's metadata: resize,
    normalisation, channel order, padding, class names, the default score
    threshold.

    Args:
        model_path (str | PathLike): The ``.onnx`` file.
        backend (str): 'onnxruntime' (default) or 'openvino'.
        num_threads (int, optional): CPU threads; None: the engine's default.
        precision (str, optional): OpenVINO's ``INFERENCE_PRECISION_HINT``
            ('f32', 'bf16'); None: its default.
        score_thr (float, optional): Keep detections scoring above this;
            None: the export's default (the config's ``test_cfg.score_thr``).

    Raises:
        FileNotFoundError: No such model file.
        ModelFormatError: Not an ONNX model, not our export, or another
            export format version.

    Example:
        >>> detector = Detector('demo.onnx')
        >>> dets = detector(['a.png', 'b.jpg'])
        >>> dets[0].boxes, dets[0].scores, dets[0].class_names
    """

    def __init__(self, model_path: Union[str, os.PathLike],
                 backend: str = 'onnxruntime',
                 num_threads: Optional[int] = None,
                 precision: Optional[str] = None,
                 score_thr: Optional[float] = None) -> None:
        self.model_path = str(model_path)
        self.info = read_model_info(model_path)  # checks before compiling
        self.preprocess = Preprocessor(self.info)
        self.score_thr = (self.info.score_thr if score_thr is None
                          else float(score_thr))
        self.backend = backend
        self.session = open_session(self.model_path, backend, num_threads,
                                    precision)

    @property
    def classes(self) -> List[str]:
        """Class names, index = label."""
        return self.info.classes

    def infer(self, inputs: np.ndarray, mask: np.ndarray
              ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The raw graph on a preprocessed batch: (scores, labels, boxes)
        with boxes xyxy in input pixels."""
        return self.session.run(inputs, mask)

    def _name(self, label: int) -> str:
        classes = self.info.classes
        return classes[label] if 0 <= label < len(classes) else str(label)

    def _run_batch(self, images: Sequence[Image], offset: int
                   ) -> List[Detections]:
        batch, pad_h, pad_w = self.session.input_shape
        pad_shape = (pad_h, pad_w) if pad_h and pad_w else None
        inputs, mask, metas = self.preprocess(images, pad_shape, offset)
        if batch and len(images) < batch:  # static batch: fill with copies
            fill = batch - len(images)
            inputs = np.concatenate([inputs, np.repeat(inputs[:1], fill, 0)])
            mask = np.concatenate([mask, np.repeat(mask[:1], fill, 0)])
        scores, labels, boxes = self.infer(inputs, mask)
        results = []
        for i, meta in enumerate(metas):
            w_scale, h_scale = meta['scale_factor']
            # Back to the original image, as mmdet's predict(rescale=True).
            bboxes = boxes[i] / np.array([w_scale, h_scale, w_scale,
                                          h_scale], np.float32)
            keep = scores[i] > self.score_thr
            kept = labels[i][keep].astype(np.int64)
            results.append(Detections(
                boxes=bboxes[keep], scores=scores[i][keep], labels=kept,
                class_names=[self._name(int(k)) for k in kept],
                image_size=tuple(meta['ori_shape'])))
        return results

    def predict(self, images: Union[Image, Sequence[Image]],
                batch_size: Optional[int] = None) -> List[Detections]:
        """Detect objects.

        Args:
            images: A path or (h, w, 3) uint8 BGR array, or a sequence of
                them, of any sizes.
            batch_size (int, optional): Images per graph run; default one
                (a batch is padded to its largest image, which changes the
                convolutions near the padded edge: one image per run gives
                each image's own result); a static graph uses its own.

        Returns:
            list[Detections]: One per image, in order.
        """
        if isinstance(images, (str, os.PathLike, np.ndarray)):
            images = [images]
        images = list(images)
        step = self.session.input_shape[0] or batch_size or 1
        results: List[Detections] = []
        for start in range(0, len(images), step):
            results += self._run_batch(images[start:start + step], start)
        return results

    __call__ = predict

    def __repr__(self) -> str:
        return (f'Detector({Path(self.model_path).name!r}, backend='
                f'{self.backend!r}, precision={self.session.precision!r}, '
                f'{len(self.classes)} classes)')
