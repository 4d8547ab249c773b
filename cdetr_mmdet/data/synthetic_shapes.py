"""Deterministic synthetic detection dataset of filled shapes, written in COCO format.

The class of an object is its *shape*; colours are random, so a detector has to look at outlines.
Later shapes may occlude earlier ones, but a placement that would hide more than
``max_occluded_frac`` of an earlier shape is re-drawn, so every painted shape is annotated.
Annotations are amodal: ``bbox``, ``area`` and ``segmentation`` describe the whole shape,
including any occluded part.

Determinism: image ``i`` of a split draws from its own ``np.random.default_rng([seed, split, 1, i])``,
and pixels come only from integer rasterisation (``cv2.fillPoly``/``cv2.line``) and element-wise
numpy maths, so the same arguments give byte-identical PNG and JSON files with the same
OpenCV/zlib build.
"""
import colorsys
import dataclasses
import inspect
import json
import math
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

CLASSES: Tuple[str, ...] = ('ellipse', 'rectangle', 'triangle', 'cross')
# Bump whenever the drawing changes, so ensure_dataset() regenerates datasets cached on disk.
GENERATOR_VERSION = 1
MANIFEST_NAME = 'manifest.json'
SPLITS: Tuple[str, ...] = ('train', 'val')

_MIN_SIDE_PX = 4  # shapes smaller than this stop looking like their class
_MIN_IMG_PX = 16
_PLACEMENT_TRIES = 40
_SUBPIXEL_SHIFT = 4  # fillPoly fixed-point bits: 1/16 px vertices give smoother outlines
_IMAGE_NAME = re.compile(r'^\d{6}\.png$')
_CIRCLE = np.array([(0.5 + 0.5 * math.cos(2 * math.pi * k / 48), 0.5 + 0.5 * math.sin(2 * math.pi * k / 48))
                    for k in range(48)])  # (48, 2) unit-box ellipse outline


@dataclasses.dataclass(frozen=True)
class ShapeStyle:
    """Appearance knobs; ``PRESETS`` holds the 'easy' and 'hard' values.

    Attributes:
        min_size_frac: Smallest shape size ``sqrt(w * h)``, as a fraction of the shorter image side.
        max_size_frac: Largest shape size, same unit. Sizes are drawn log-uniformly in between.
        max_aspect: Box aspect ``w / h`` is drawn log-uniformly in ``[1 / max_aspect, max_aspect]``.
        max_rotation: Shapes are rotated by up to this many degrees either way.
        max_occluded_frac: Fraction of an earlier shape's pixels that later shapes may cover.
        noise_std: Std of Gaussian pixel noise (0-255 scale) added to the whole image at the end.
        texture_amp: Std of the smooth colour blotches on the background (0-255 scale).
        clutter_lines: Number of random thin lines drawn on the background as distractors.
        bg_saturation: (lo, hi) HSV saturation range of the background colour, in [0, 1].
        bg_value: (lo, hi) HSV value range of the background colour.
        fg_saturation: (lo, hi) HSV saturation range of shape colours.
        fg_value: (lo, hi) HSV value range of shape colours.
    """

    min_size_frac: float
    max_size_frac: float
    max_aspect: float
    max_rotation: float
    max_occluded_frac: float
    noise_std: float
    texture_amp: float
    clutter_lines: int
    bg_saturation: Tuple[float, float]
    bg_value: Tuple[float, float]
    fg_saturation: Tuple[float, float]
    fg_value: Tuple[float, float]


PRESETS: Dict[str, ShapeStyle] = {
    # Saturated bright shapes on a dull, darkish, mildly textured background: learnable in minutes.
    'easy': ShapeStyle(min_size_frac=0.1, max_size_frac=0.5, max_aspect=2.0, max_rotation=0.0,
                       max_occluded_frac=0.5, noise_std=6.0, texture_amp=12.0, clutter_lines=0,
                       bg_saturation=(0.0, 0.3), bg_value=(0.15, 0.45),
                       fg_saturation=(0.7, 1.0), fg_value=(0.75, 1.0)),
    # Low contrast, small rotated shapes, heavy occlusion, noise and distractor lines.
    'hard': ShapeStyle(min_size_frac=0.05, max_size_frac=0.5, max_aspect=3.0, max_rotation=45.0,
                       max_occluded_frac=0.7, noise_std=20.0, texture_amp=35.0, clutter_lines=6,
                       bg_saturation=(0.0, 0.7), bg_value=(0.1, 0.9),
                       fg_saturation=(0.2, 1.0), fg_value=(0.3, 1.0)),
}


def _hsv_to_bgr(h: float, s: float, v: float) -> np.ndarray:
    """One HSV colour (each in [0, 1]) as a float BGR triple on the 0-255 scale."""
    return np.array(colorsys.hsv_to_rgb(h, s, v)[::-1]) * 255.0


def _upsample(grid: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear upsampling of a (gh, gw, 3) grid to (height, width, 3) with element-wise numpy only."""
    gh, gw = grid.shape[:2]
    ys, xs = np.linspace(0, gh - 1, height), np.linspace(0, gw - 1, width)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, gh - 1), np.minimum(x0 + 1, gw - 1)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x1] * fx  # (height, width, 3)
    bottom = grid[y1][:, x0] * (1 - fx) + grid[y1][:, x1] * fx
    return top * (1 - fy) + bottom * fy


def _background(rng: np.random.Generator, height: int, width: int, style: ShapeStyle) -> np.ndarray:
    """Dull base colour + smooth blotches (+ distractor lines); float (height, width, 3) BGR."""
    base = _hsv_to_bgr(rng.uniform(), rng.uniform(*style.bg_saturation), rng.uniform(*style.bg_value))
    grid = rng.normal(0.0, style.texture_amp, size=(int(rng.integers(3, 7)), int(rng.integers(3, 7)), 3))
    # Broadcasting may pick a non-C memory order, which OpenCV's drawing functions reject.
    img = np.ascontiguousarray(base + _upsample(grid, height, width))
    for _ in range(style.clutter_lines):
        pts = rng.integers(0, [width, height, width, height])
        colour = _hsv_to_bgr(rng.uniform(), rng.uniform(*style.fg_saturation), rng.uniform(*style.fg_value))
        cv2.line(img, (int(pts[0]), int(pts[1])), (int(pts[2]), int(pts[3])), colour.tolist(), 1)
    return img


def _unit_outline(label: int, rng: np.random.Generator) -> np.ndarray:
    """Outline (N, 2) of class ``label`` inside the unit box [0, 1]^2, (x, y) order."""
    name = CLASSES[label]
    if name == 'ellipse':
        return _CIRCLE.copy()
    if name == 'rectangle':
        return np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    if name == 'triangle':
        tri = np.array([[rng.uniform(0.2, 0.8), 0.0], [1.0, 1.0], [0.0, 1.0]])
        for _ in range(int(rng.integers(4))):  # point up, right, down or left: 90-degree turns
            tri = np.stack([1.0 - tri[:, 1], tri[:, 0]], axis=1)
        return tri
    # cross: a plus sign whose arms are 30-45% of the box thick
    lo = (1.0 - rng.uniform(0.3, 0.45)) / 2
    hi = 1.0 - lo
    return np.array([[lo, 0], [hi, 0], [hi, lo], [1, lo], [1, hi], [hi, hi],
                     [hi, 1], [lo, 1], [lo, hi], [0, hi], [0, lo], [lo, lo]], dtype=float)


def _sample_shape(rng: np.random.Generator, height: int, width: int, style: ShapeStyle,
                  shrink: float) -> Tuple[int, np.ndarray, np.ndarray]:
    """Draw one shape fully inside the image.

    Args:
        shrink: Factor (<= 1) on the largest size, lowered on retries so crowded images still fit.

    Returns:
        Tuple of class index, polygon (N, 2) in pixel coordinates and bool mask (height, width).
    """
    label = int(rng.integers(len(CLASSES)))
    side = min(height, width)
    lo = math.log(style.min_size_frac * side)
    hi = max(lo, math.log(style.max_size_frac * side * shrink))
    size = math.exp(rng.uniform(lo, hi))
    aspect = math.exp(rng.uniform(-math.log(style.max_aspect), math.log(style.max_aspect)))
    box_wh = np.maximum([size * math.sqrt(aspect), size / math.sqrt(aspect)], _MIN_SIDE_PX)
    pts = (_unit_outline(label, rng) - 0.5) * box_wh  # centred at the origin
    theta = math.radians(rng.uniform(-style.max_rotation, style.max_rotation))
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    pts = pts @ rot.T
    extent = pts.max(0) - pts.min(0)
    room = np.array([width - 1, height - 1], dtype=float)
    pts *= min(1.0, float(np.min(room / extent)))  # too big after rotation/clamping: scale to fit
    pts -= pts.min(0)
    pts += rng.uniform(0.0, 1.0, size=2) * (room - pts.max(0))
    mask = np.zeros((height, width), np.uint8)
    fixed = np.round(pts * (1 << _SUBPIXEL_SHIFT)).astype(np.int32)
    cv2.fillPoly(mask, [fixed], 1, lineType=cv2.LINE_8, shift=_SUBPIXEL_SHIFT)
    return label, pts, mask.astype(bool)


def render_image(rng: np.random.Generator, height: int, width: int, num_objects: int,
                 style: ShapeStyle) -> Tuple[np.ndarray, List[Dict[str, Any]]]:
    """Render one image with exactly ``num_objects`` shapes.

    Args:
        rng: Generator that owns this image; all randomness is drawn from it.
        height: Image height in pixels.
        width: Image width in pixels.
        num_objects: Number of shapes to paint; 0 gives a background-only image.
        style: Appearance knobs.

    Returns:
        Tuple of the uint8 BGR image (height, width, 3) and one dict per shape with
        ``category_id`` (1-based), ``bbox`` [x, y, w, h], ``area`` and ``segmentation``.

    Raises:
        RuntimeError: If the shapes cannot be placed within the occlusion limit.
    """
    img = _background(rng, height, width, style)
    masks: List[np.ndarray] = []  # full mask of each accepted shape
    visible: List[np.ndarray] = []  # its still-visible pixels
    hues: List[float] = []
    anns: List[Dict[str, Any]] = []
    keep = 1.0 - style.max_occluded_frac  # least visible fraction of every earlier shape
    for _ in range(num_objects):
        for attempt in range(_PLACEMENT_TRIES):
            label, pts, mask = _sample_shape(rng, height, width, style, shrink=0.93 ** attempt)
            if all((vis & ~mask).sum() >= keep * full.sum() for vis, full in zip(visible, masks)):
                break
        else:
            raise RuntimeError(f'could not place {num_objects} shapes in a {width}x{height} image '
                               f'with max_occluded_frac={style.max_occluded_frac}; lower max_objects '
                               'or max_size_frac')
        visible = [vis & ~mask for vis in visible] + [mask]
        masks.append(mask)
        # Of a few random hues keep the one farthest from earlier shapes, so overlaps stay distinct.
        cands = rng.uniform(size=6)
        gaps = [min([min(abs(c - h), 1 - abs(c - h)) for h in hues], default=1.0) for c in cands]
        hues.append(float(cands[int(np.argmax(gaps))]))
        img[mask] = _hsv_to_bgr(hues[-1], rng.uniform(*style.fg_saturation), rng.uniform(*style.fg_value))
        x, y, w, h = cv2.boundingRect(mask.astype(np.uint8))
        # +0.5: fillPoly puts integer vertices on pixel centres, COCO polygons use pixel edges.
        poly = [round(float(v), 2) for v in (pts + 0.5).ravel()]
        anns.append(dict(category_id=label + 1, bbox=[float(x), float(y), float(w), float(h)],
                         area=float(mask.sum()), segmentation=[poly], iscrowd=0))
    img += rng.normal(0.0, style.noise_std, size=img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), anns


def _resolve_params(args: Dict[str, Any]) -> Dict[str, Any]:
    """Validate generate_dataset()'s keyword arguments (all of them) and return a JSON-ready dict."""
    num_train, num_val, seed = args['num_train'], args['num_val'], args['seed']
    min_objects, max_objects = args['min_objects'], args['max_objects']
    img_size, empty_fraction, difficulty = args['img_size'], args['empty_fraction'], args['difficulty']
    overrides = {k: args[k] for k in ('min_size_frac', 'max_size_frac', 'noise_std', 'max_occluded_frac')}
    sizes = [img_size] if isinstance(img_size, (int, np.integer)) else list(img_size) \
        if isinstance(img_size, (list, tuple)) else []
    if len(sizes) not in (1, 2) or not all(isinstance(s, (int, np.integer)) for s in sizes):
        raise ValueError(f'img_size must be an int or a (min, max) pair of ints, got {img_size!r}')
    lo_px, hi_px = int(sizes[0]), int(sizes[-1])
    if not _MIN_IMG_PX <= lo_px <= hi_px:
        raise ValueError(f'img_size needs {_MIN_IMG_PX} <= min <= max, got min={lo_px}, max={hi_px}')
    for name, value in (('num_train', num_train), ('num_val', num_val), ('seed', seed),
                        ('min_objects', min_objects), ('max_objects', max_objects)):
        if not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f'{name} must be a non-negative int, got {value!r}')
    if min_objects < 1:
        raise ValueError(f'min_objects must be >= 1 (use empty_fraction for empty images), got {min_objects}')
    if min_objects > max_objects:
        raise ValueError(f'min_objects ({min_objects}) must be <= max_objects ({max_objects})')
    if not 0.0 <= empty_fraction <= 1.0:
        raise ValueError(f'empty_fraction must be in [0, 1], got {empty_fraction}')
    if difficulty not in PRESETS:
        raise ValueError(f'difficulty must be one of {sorted(PRESETS)}, got {difficulty!r}')
    style = dataclasses.replace(PRESETS[difficulty], **{k: float(v) for k, v in overrides.items() if v is not None})
    if not 0.0 < style.min_size_frac <= style.max_size_frac <= 1.0:
        raise ValueError(f'need 0 < min_size_frac ({style.min_size_frac}) <= max_size_frac '
                         f'({style.max_size_frac}) <= 1')
    if not 0.0 <= style.max_occluded_frac < 1.0:
        raise ValueError(f'max_occluded_frac must be in [0, 1), got {style.max_occluded_frac}')
    if style.noise_std < 0:
        raise ValueError(f'noise_std must be >= 0, got {style.noise_std}')
    # The JSON round trip turns tuples into lists, so a manifest read back compares equal.
    return json.loads(json.dumps(dict(
        version=GENERATOR_VERSION, classes=CLASSES, num_train=int(num_train), num_val=int(num_val),
        img_size=[lo_px, hi_px], min_objects=int(min_objects), max_objects=int(max_objects),
        empty_fraction=float(empty_fraction), seed=int(seed), difficulty=difficulty,
        style=dataclasses.asdict(style))))


def _write_split(out: Path, split_id: int, params: Dict[str, Any]) -> Dict[str, int]:
    """Render one split's PNGs and COCO JSON; returns its image/object/empty counts."""
    split = SPLITS[split_id]
    num = params[f'num_{split}']
    style = ShapeStyle(**{k: tuple(v) if isinstance(v, list) else v for k, v in params['style'].items()})
    img_dir = out / split
    img_dir.mkdir(parents=True, exist_ok=True)
    for stale in img_dir.iterdir():  # only our own names, so a shared directory is never emptied
        if _IMAGE_NAME.match(stale.name):
            stale.unlink()
    # Round half up (not Python's banker's rounding) so e.g. 0.05 * 10 gives exactly 1 empty image.
    num_empty = math.floor(params['empty_fraction'] * num + 0.5)
    # Distinct entropy lengths/tags: SeedSequence treats [a, b] and [a, b, 0] as the same seed.
    empty = set(np.random.default_rng([params['seed'], split_id, 0]).permutation(num)[:num_empty].tolist())
    lo_px, hi_px = params['img_size']
    images, annotations = [], []
    for index in range(num):
        rng = np.random.default_rng([params['seed'], split_id, 1, index])
        height, width = (int(v) for v in rng.integers(lo_px, hi_px + 1, size=2))
        count = 0 if index in empty else int(rng.integers(params['min_objects'], params['max_objects'] + 1))
        img, anns = render_image(rng, height, width, count, style)
        ok, png = cv2.imencode('.png', img, [cv2.IMWRITE_PNG_COMPRESSION, 3])
        if not ok:
            raise RuntimeError(f'OpenCV failed to encode {split} image {index} as PNG')
        file_name = f'{index:06d}.png'
        (img_dir / file_name).write_bytes(png.tobytes())
        images.append(dict(id=index + 1, file_name=file_name, width=width, height=height))
        for ann in anns:
            annotations.append(dict(id=len(annotations) + 1, image_id=index + 1, **ann))
    coco = dict(info=dict(description=f'cdetr_mmdet synthetic shapes ({split})', version=str(GENERATOR_VERSION)),
                licenses=[], images=images, annotations=annotations,
                categories=[dict(id=i + 1, name=name, supercategory='shape') for i, name in enumerate(CLASSES)])
    ann_file = out / 'annotations' / f'instances_{split}.json'
    ann_file.parent.mkdir(parents=True, exist_ok=True)
    ann_file.write_text(json.dumps(coco, separators=(',', ':')))
    return dict(images=num, objects=len(annotations), empty_images=num_empty)


def _summary(out: Path, counts: Dict[str, Dict[str, int]], generated: bool) -> Dict[str, Any]:
    """The dict returned by generate_dataset() and ensure_dataset()."""
    result: Dict[str, Any] = dict(out_dir=str(out), classes=CLASSES, generated=generated, counts=counts)
    for split in SPLITS:
        result[f'{split}_ann_file'] = str(out / 'annotations' / f'instances_{split}.json')
        result[f'{split}_img_dir'] = str(out / split)
    return result


def generate_dataset(out_dir: Union[str, Path], *, num_train: int = 1000, num_val: int = 200,
                     img_size: Union[int, Sequence[int]] = 128, min_objects: int = 1, max_objects: int = 3,
                     empty_fraction: float = 0.05, seed: int = 0, difficulty: str = 'easy',
                     min_size_frac: Optional[float] = None, max_size_frac: Optional[float] = None,
                     noise_std: Optional[float] = None,
                     max_occluded_frac: Optional[float] = None) -> Dict[str, Any]:
    """Write ``<out_dir>/{train,val}/*.png``, ``annotations/instances_{train,val}.json``, manifest.

    Args:
        out_dir: Dataset root, used as ``data_root`` in mmdet configs.
        num_train: Number of train images. Defaults to 1000.
        num_val: Number of val images. Defaults to 200.
        img_size: Square side, or a (min, max) range from which each image's width and height
            are drawn independently. Defaults to 128.
        min_objects: Fewest shapes in a non-empty image. Defaults to 1.
        max_objects: Most shapes in an image. Defaults to 3.
        empty_fraction: Exactly ``floor(empty_fraction * n + 0.5)`` images of each split have no
            shapes; they are still listed in ``images``. Defaults to 0.05.
        seed: Seed; the same arguments give byte-identical files. Defaults to 0.
        difficulty: Key of ``PRESETS`` ('easy' or 'hard'). Defaults to 'easy'.
        min_size_frac: Overrides the preset's ``ShapeStyle.min_size_frac`` when not None.
        max_size_frac: Overrides ``ShapeStyle.max_size_frac`` when not None.
        noise_std: Overrides ``ShapeStyle.noise_std`` when not None.
        max_occluded_frac: Overrides ``ShapeStyle.max_occluded_frac`` when not None.

    Returns:
        Dict with ``out_dir``, ``classes``, ``{split}_ann_file``, ``{split}_img_dir``,
        ``counts`` (per split: images, objects, empty_images) and ``generated`` (True).

    Raises:
        ValueError: On invalid arguments.
    """
    # locals() here is exactly the keyword arguments, so ensure_dataset() can resolve the same way.
    params = _resolve_params({k: v for k, v in locals().items() if k != 'out_dir'})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / MANIFEST_NAME
    manifest.unlink(missing_ok=True)  # an interrupted run must look unfinished to ensure_dataset()
    counts = {split: _write_split(out, split_id, params) for split_id, split in enumerate(SPLITS)}
    manifest.write_text(json.dumps(dict(params=params, counts=counts), indent=1, sort_keys=True))
    return _summary(out, counts, generated=True)


def ensure_dataset(out_dir: Union[str, Path], **kwargs: Any) -> Dict[str, Any]:
    """Generate the dataset unless ``out_dir`` already holds one made with the same arguments.

    The manifest is written last by generate_dataset(), so a half-written dataset has none and is
    regenerated; so is one whose recorded parameters (or generator version) differ.

    Args:
        out_dir: Dataset root.
        **kwargs: Keyword arguments of generate_dataset().

    Returns:
        The generate_dataset() dict; ``generated`` is False when the files were reused.
    """
    bound = inspect.signature(generate_dataset).bind(out_dir, **kwargs)  # TypeError on unknown names
    bound.apply_defaults()
    params = _resolve_params({k: v for k, v in bound.arguments.items() if k != 'out_dir'})
    out = Path(out_dir)
    try:
        recorded = json.loads((out / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        recorded = None
    ann_files = [out / 'annotations' / f'instances_{split}.json' for split in SPLITS]
    if recorded is not None and recorded.get('params') == params and all(p.is_file() for p in ann_files):
        return _summary(out, recorded['counts'], generated=False)
    return generate_dataset(out, **kwargs)
