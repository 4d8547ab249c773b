"""Deterministic synthetic detection dataset of filled shapes, written in COCO format.

The shapes are drawn by :mod:`.shape_drawing`. Image ``i`` of a split draws from its own
``np.random.default_rng([seed, split, 1, i])``, so the same settings give byte-identical PNG
and JSON files with the same OpenCV/zlib build.
"""
import dataclasses
import json
import math
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from .shape_drawing import CLASSES, PRESETS, ShapeStyle, render_image

__all__ = ['CLASSES', 'PRESETS', 'DatasetSettings', 'GENERATOR_VERSION', 'ShapeStyle',
           'ensure_dataset', 'generate_dataset', 'render_image']

# Bump whenever the drawing changes, so ensure_dataset() regenerates datasets cached on disk.
GENERATOR_VERSION = 1
MANIFEST_NAME = 'manifest.json'
SPLITS: Tuple[str, ...] = ('train', 'val')

_MIN_IMG_PX = 16
_IMAGE_NAME = re.compile(r'^\d{6}\.png$')


@dataclasses.dataclass(frozen=True)
class DatasetSettings:
    """Everything that defines a generated dataset; the same settings give the same files.

    Attributes:
        num_train: Number of train images.
        num_val: Number of val images.
        img_size: Square side, or a (min, max) range from which each image's width and height
            are drawn independently.
        min_objects: Fewest shapes in a non-empty image.
        max_objects: Most shapes in an image.
        empty_fraction: Exactly ``floor(empty_fraction * n + 0.5)`` images of each split have
            no shapes; they are still listed in ``images``.
        seed: Seed of every random draw.
        difficulty: Key of ``PRESETS`` ('easy' or 'hard').
        min_size_frac: Overrides the preset's ``ShapeStyle.min_size_frac`` when not None.
        max_size_frac: Overrides ``ShapeStyle.max_size_frac`` when not None.
        noise_std: Overrides ``ShapeStyle.noise_std`` when not None.
        max_occluded_frac: Overrides ``ShapeStyle.max_occluded_frac`` when not None.
    """

    num_train: int = 1000
    num_val: int = 200
    img_size: Union[int, Sequence[int]] = 128
    min_objects: int = 1
    max_objects: int = 3
    empty_fraction: float = 0.05
    seed: int = 0
    difficulty: str = 'easy'
    min_size_frac: Optional[float] = None
    max_size_frac: Optional[float] = None
    noise_std: Optional[float] = None
    max_occluded_frac: Optional[float] = None

    def style(self) -> ShapeStyle:
        """The difficulty preset with the overrides that are set."""
        overrides = dict(min_size_frac=self.min_size_frac, max_size_frac=self.max_size_frac,
                         noise_std=self.noise_std, max_occluded_frac=self.max_occluded_frac)
        return dataclasses.replace(PRESETS[self.difficulty], **{
            name: float(value) for name, value in overrides.items() if value is not None})

    def pixel_range(self) -> Tuple[int, int]:
        """(min, max) image side in pixels; ValueError unless ``img_size`` is valid."""
        size = self.img_size
        sizes = ([size] if isinstance(size, (int, np.integer)) else
                 list(size) if isinstance(size, (list, tuple)) else [])
        if len(sizes) not in (1, 2) or not all(isinstance(s, (int, np.integer)) for s in sizes):
            raise ValueError(f'img_size must be an int or a (min, max) pair of ints, got {size!r}')
        lo_px, hi_px = int(sizes[0]), int(sizes[-1])
        if not _MIN_IMG_PX <= lo_px <= hi_px:
            raise ValueError(f'img_size needs {_MIN_IMG_PX} <= min <= max, got min={lo_px}, '
                             f'max={hi_px}')
        return lo_px, hi_px

    def manifest_params(self) -> Dict[str, Any]:
        """Validate every setting; returns the JSON-ready dict recorded in the manifest.

        Raises:
            ValueError: Naming the first invalid setting.
        """
        lo_px, hi_px = self.pixel_range()
        for name in ('num_train', 'num_val', 'seed', 'min_objects', 'max_objects'):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f'{name} must be a non-negative int, got {value!r}')
        if self.min_objects < 1:
            raise ValueError('min_objects must be >= 1 (use empty_fraction for empty images), '
                             f'got {self.min_objects}')
        if self.min_objects > self.max_objects:
            raise ValueError(f'min_objects ({self.min_objects}) must be <= max_objects '
                             f'({self.max_objects})')
        if not 0.0 <= self.empty_fraction <= 1.0:
            raise ValueError(f'empty_fraction must be in [0, 1], got {self.empty_fraction}')
        if self.difficulty not in PRESETS:
            raise ValueError(f'difficulty must be one of {sorted(PRESETS)}, '
                             f'got {self.difficulty!r}')
        style = self.style()
        _check_style(style)
        # The JSON round trip turns tuples into lists, so a manifest read back compares equal.
        return json.loads(json.dumps(dict(
            version=GENERATOR_VERSION, classes=CLASSES, num_train=int(self.num_train),
            num_val=int(self.num_val), img_size=[lo_px, hi_px],
            min_objects=int(self.min_objects), max_objects=int(self.max_objects),
            empty_fraction=float(self.empty_fraction), seed=int(self.seed),
            difficulty=self.difficulty, style=dataclasses.asdict(style))))


def _check_style(style: ShapeStyle) -> None:
    """ValueError unless the overridable style values are in range."""
    if not 0.0 < style.min_size_frac <= style.max_size_frac <= 1.0:
        raise ValueError(f'need 0 < min_size_frac ({style.min_size_frac}) <= max_size_frac '
                         f'({style.max_size_frac}) <= 1')
    if not 0.0 <= style.max_occluded_frac < 1.0:
        raise ValueError(f'max_occluded_frac must be in [0, 1), got {style.max_occluded_frac}')
    if style.noise_std < 0:
        raise ValueError(f'noise_std must be >= 0, got {style.noise_std}')


def _render_split(img_dir: Path, split_id: int, params: Dict[str, Any], style: ShapeStyle
                  ) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]], int]:
    """Render one split's PNGs into ``img_dir``; returns COCO images, annotations, #empty."""
    num = params[f'num_{SPLITS[split_id]}']
    # Round half up (not Python's banker's rounding) so e.g. 0.05 * 10 gives exactly 1 empty.
    num_empty = math.floor(params['empty_fraction'] * num + 0.5)
    # Distinct entropy lengths/tags: SeedSequence treats [a, b] and [a, b, 0] as the same seed.
    order = np.random.default_rng([params['seed'], split_id, 0]).permutation(num)
    empty = set(order[:num_empty].tolist())
    lo_px, hi_px = params['img_size']
    images: List[Dict[str, Any]] = []
    annotations: List[Dict[str, Any]] = []
    for index in range(num):
        rng = np.random.default_rng([params['seed'], split_id, 1, index])
        height, width = (int(v) for v in rng.integers(lo_px, hi_px + 1, size=2))
        count = (0 if index in empty else
                 int(rng.integers(params['min_objects'], params['max_objects'] + 1)))
        img, anns = render_image(rng, height, width, count, style)
        ok, png = cv2.imencode('.png', img, [cv2.IMWRITE_PNG_COMPRESSION, 3])
        if not ok:
            raise RuntimeError(f'OpenCV failed to encode {img_dir.name} image {index} as PNG')
        file_name = f'{index:06d}.png'
        (img_dir / file_name).write_bytes(png.tobytes())
        images.append(dict(id=index + 1, file_name=file_name, width=width, height=height))
        for ann in anns:
            annotations.append(dict(id=len(annotations) + 1, image_id=index + 1, **ann))
    return images, annotations, num_empty


def _write_split(out: Path, split_id: int, params: Dict[str, Any],
                 style: ShapeStyle) -> Dict[str, int]:
    """Render one split's PNGs and COCO JSON; returns its image/object/empty counts."""
    split = SPLITS[split_id]
    img_dir = out / split
    img_dir.mkdir(parents=True, exist_ok=True)
    for stale in img_dir.iterdir():  # only our own names: a shared directory is never emptied
        if _IMAGE_NAME.match(stale.name):
            stale.unlink()
    images, annotations, num_empty = _render_split(img_dir, split_id, params, style)
    categories = [dict(id=i + 1, name=name, supercategory='shape')
                  for i, name in enumerate(CLASSES)]
    coco = dict(info=dict(description=f'cdetr_mmdet synthetic shapes ({split})',
                          version=str(GENERATOR_VERSION)),
                licenses=[], images=images, annotations=annotations, categories=categories)
    ann_file = out / 'annotations' / f'instances_{split}.json'
    ann_file.parent.mkdir(parents=True, exist_ok=True)
    ann_file.write_text(json.dumps(coco, separators=(',', ':')))
    return dict(images=len(images), objects=len(annotations), empty_images=num_empty)


def _summary(out: Path, counts: Dict[str, Dict[str, int]], generated: bool) -> Dict[str, Any]:
    """The dict returned by generate_dataset() and ensure_dataset()."""
    result: Dict[str, Any] = dict(out_dir=str(out), classes=CLASSES, generated=generated,
                                  counts=counts)
    for split in SPLITS:
        result[f'{split}_ann_file'] = str(out / 'annotations' / f'instances_{split}.json')
        result[f'{split}_img_dir'] = str(out / split)
    return result


def generate_dataset(out_dir: Union[str, Path], **settings: Any) -> Dict[str, Any]:
    """Write ``<out_dir>/{train,val}/*.png``, ``annotations/instances_{train,val}.json``, manifest.

    Args:
        out_dir: Dataset root, used as ``data_root`` in mmdet configs.
        **settings: Fields of :class:`DatasetSettings` (its defaults for the others).

    Returns:
        Dict with ``out_dir``, ``classes``, ``{split}_ann_file``, ``{split}_img_dir``,
        ``counts`` (per split: images, objects, empty_images) and ``generated`` (True).

    Raises:
        TypeError: On a name that is not a setting.
        ValueError: On an invalid setting.
    """
    chosen = DatasetSettings(**settings)
    params = chosen.manifest_params()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / MANIFEST_NAME
    manifest.unlink(missing_ok=True)  # an interrupted run must look unfinished to ensure_dataset()
    counts = {split: _write_split(out, split_id, params, chosen.style())
              for split_id, split in enumerate(SPLITS)}
    manifest.write_text(json.dumps(dict(params=params, counts=counts), indent=1, sort_keys=True))
    return _summary(out, counts, generated=True)


def ensure_dataset(out_dir: Union[str, Path], **settings: Any) -> Dict[str, Any]:
    """Generate the dataset unless ``out_dir`` already holds one made with the same settings.

    The manifest is written last by generate_dataset(), so a half-written dataset has none and
    is regenerated; so is one whose recorded settings (or generator version) differ.

    Args:
        out_dir: Dataset root.
        **settings: Fields of :class:`DatasetSettings`, as for generate_dataset().

    Returns:
        The generate_dataset() dict; ``generated`` is False when the files were reused.
    """
    params = DatasetSettings(**settings).manifest_params()  # TypeError on unknown names
    out = Path(out_dir)
    try:
        recorded = json.loads((out / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        recorded = None
    ann_files = [out / 'annotations' / f'instances_{split}.json' for split in SPLITS]
    if (recorded is not None and recorded.get('params') == params
            and all(path.is_file() for path in ann_files)):
        return _summary(out, recorded['counts'], generated=False)
    return generate_dataset(out, **settings)
