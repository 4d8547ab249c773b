"""Read what an exported model file says about itself, without onnx or torch.

``tools/export_onnx.py`` stores everything inference needs as ONNX
``metadata_props`` (``cdetr.*`` keys, JSON values). This module reads them
straight from the protobuf wire format (the ONNX ``ModelProto`` top-level
fields), so the runtime needs neither the ``onnx`` package nor a runtime
session to tell "not a model", "not our export" and "another export version"
apart, each with its own error.
"""
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple, Union

# Version of the file contract (graph inputs/outputs + the metadata below).
# 1: exports before the runtime existed (model facts only, no preprocessing).
# 2: preprocessing, score threshold and this version recorded.
FORMAT_VERSION = 2
PREFIX = 'cdetr.'

# ModelProto field numbers (onnx/onnx.proto).
_IR_VERSION, _GRAPH, _METADATA_PROPS = 1, 7, 14
INTERPOLATIONS = ('nearest', 'bilinear', 'bicubic', 'area', 'lanczos')


class ModelFormatError(ValueError):
    """The file is not an ONNX model, or not one tools/export_onnx.py wrote."""


def _varint(buf: memoryview, pos: int) -> Tuple[int, int]:
    """Decode a protobuf varint at ``pos``; returns (value, next position)."""
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ModelFormatError('truncated or malformed varint')
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def iter_fields(buf: memoryview) -> Iterator[Tuple[int, int, object]]:
    """Top-level (field number, wire type, value) of a protobuf message.

    Length-delimited values are returned as memoryview slices (no copy: the
    graph of a large model is skipped, not parsed).

    Raises:
        ModelFormatError: The bytes are not a well-formed message.
    """
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ModelFormatError('field number 0')
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = bytes(buf[pos:pos + 8]), pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + size], pos + size
        elif wire == 5:
            value, pos = bytes(buf[pos:pos + 4]), pos + 4
        else:
            raise ModelFormatError(f'unsupported wire type {wire}')
        if pos > len(buf):
            raise ModelFormatError('truncated message')
        yield number, wire, value


def read_metadata_props(data: bytes) -> Dict[str, str]:
    """``metadata_props`` of a serialised ONNX ``ModelProto``.

    Raises:
        ModelFormatError: Not a well-formed ONNX model (no ``ir_version`` or
            no graph).
    """
    buf = memoryview(data)
    props: Dict[str, str] = {}
    seen = set()
    for number, wire, value in iter_fields(buf):
        seen.add(number)
        if number == _METADATA_PROPS and wire == 2:
            entry = {n: bytes(v).decode('utf-8') for n, w, v in
                     iter_fields(value) if w == 2}
            props[entry.get(1, '')] = entry.get(2, '')
    if _IR_VERSION not in seen or _GRAPH not in seen:
        raise ModelFormatError('no ONNX ir_version or graph')
    return props


@dataclass
class ModelInfo:
    """What inference needs to know about an exported model.

    Attributes:
        format_version (int): :data:`FORMAT_VERSION` of the export.
        classes (list[str]): Class names, index = label.
        num_classes (int): Classes of the head.
        max_per_img (int): Detections the graph returns per image (top-k).
        resize_scale (tuple[int, int], optional): ``Resize.scale`` (w, h) of
            the test pipeline; None: no resize.
        keep_ratio (bool): ``Resize.keep_ratio`` (mmcv ``imrescale``).
        interpolation (str): cv2 interpolation of the resize.
        mean (tuple[float, float, float]): Per channel, model's order.
        std (tuple[float, float, float]): Per channel, model's order.
        bgr_to_rgb (bool): Images are read BGR (as mmcv); swap to RGB.
        pad_size_divisor (int): Pad a batch to a multiple of this.
        pad_value (float): Padded pixels' value after normalisation.
        score_thr (float): Default score threshold (the config's
            ``test_cfg.score_thr``).
        precision (str): 'fp32' or 'int8' (quantised graph).
        extra (dict): Every other ``cdetr.*`` key, decoded.
    """

    format_version: int
    classes: List[str]
    num_classes: int
    max_per_img: int
    resize_scale: Optional[Tuple[int, int]]
    keep_ratio: bool
    interpolation: str
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    bgr_to_rgb: bool
    pad_size_divisor: int
    pad_value: float
    score_thr: float
    precision: str = 'fp32'
    extra: dict = field(default_factory=dict)


_REQUIRED = ('num_classes', 'max_per_img', 'resize_scale', 'keep_ratio',
             'mean', 'std', 'bgr_to_rgb', 'pad_size_divisor', 'score_thr')


def parse_model_info(props: Dict[str, str], path: str = '<model>'
                     ) -> ModelInfo:
    """Decode and check the ``cdetr.*`` metadata of an export.

    Raises:
        ModelFormatError: No ``cdetr.*`` keys (not our export), another
            format version, or a key missing or malformed.
    """
    meta = {}
    for key, value in props.items():
        if key.startswith(PREFIX):
            try:
                meta[key[len(PREFIX):]] = json.loads(value)
            except json.JSONDecodeError as err:
                raise ModelFormatError(
                    f'{path}: metadata {key!r} is not JSON ({err})') from err
    if not meta:
        raise ModelFormatError(
            f'{path} is an ONNX model but has no cdetr.* metadata: it was not '
            'exported by tools/export_onnx.py (export it with that tool)')
    version = meta.get('format_version', 1)
    if version != FORMAT_VERSION:
        hint = ('re-export it with this version\'s tools/export_onnx.py'
                if version < FORMAT_VERSION else
                'upgrade cdetr_runtime to the version that exported it')
        raise ModelFormatError(
            f'{path} is export format version {version}; this cdetr_runtime '
            f'reads version {FORMAT_VERSION}: {hint}')
    missing = [k for k in _REQUIRED if k not in meta]
    if missing:
        raise ModelFormatError(
            f'{path}: export metadata lacks {", ".join(missing)}; re-export '
            'it with tools/export_onnx.py')
    interpolation = meta.get('interpolation', 'bilinear')
    if interpolation not in INTERPOLATIONS:
        raise ModelFormatError(f'{path}: unknown interpolation '
                               f'{interpolation!r}')
    scale = meta['resize_scale']
    known = set(_REQUIRED) | {'format_version', 'classes', 'interpolation',
                              'pad_value', 'precision'}
    return ModelInfo(
        format_version=version, classes=list(meta.get('classes') or []),
        num_classes=int(meta['num_classes']),
        max_per_img=int(meta['max_per_img']),
        resize_scale=tuple(int(v) for v in scale) if scale else None,
        keep_ratio=bool(meta['keep_ratio']), interpolation=interpolation,
        mean=tuple(float(v) for v in meta['mean']),
        std=tuple(float(v) for v in meta['std']),
        bgr_to_rgb=bool(meta['bgr_to_rgb']),
        pad_size_divisor=int(meta['pad_size_divisor']),
        pad_value=float(meta.get('pad_value', 0.)),
        score_thr=float(meta['score_thr']),
        precision=str(meta.get('precision', 'fp32')),
        extra={k: v for k, v in meta.items() if k not in known})


def read_model_info(path: Union[str, Path]) -> ModelInfo:
    """Open an exported model file and return its :class:`ModelInfo`.

    Args:
        path (str | Path): The ``.onnx`` file of tools/export_onnx.py.

    Raises:
        FileNotFoundError: No such file.
        ModelFormatError: Not an ONNX model, not our export, or another
            export format version.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'model file not found: {path}')
    data = path.read_bytes()
    try:
        props = read_metadata_props(data)
    except (ModelFormatError, UnicodeDecodeError) as err:
        raise ModelFormatError(
            f'{path} is not an ONNX model ({err}); pass the .onnx file '
            'written by tools/export_onnx.py') from err
    return parse_model_info(props, str(path))
