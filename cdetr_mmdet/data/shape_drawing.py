"""Drawing of the synthetic shapes: one image of filled, possibly occluding shapes.

The class of an object is its *shape*; colours are random, so a detector has to look at
outlines. Later shapes may occlude earlier ones, but a placement that would hide more than
``max_occluded_frac`` of an earlier shape is re-drawn, so every painted shape is annotated.
Annotations are amodal: ``bbox``, ``area`` and ``segmentation`` describe the whole shape,
including any occluded part. All randomness comes from the generator passed in, and pixels
only from integer rasterisation (``cv2.fillPoly``/``cv2.line``) and element-wise numpy maths.
A change to the drawing must bump ``synthetic_shapes.GENERATOR_VERSION``.
"""
import colorsys
import dataclasses
import math
from typing import Any, Dict, List, Tuple

import cv2
import numpy as np

CLASSES: Tuple[str, ...] = ('ellipse', 'rectangle', 'triangle', 'cross')

_MIN_SIDE_PX = 4  # shapes smaller than this stop looking like their class
_PLACEMENT_TRIES = 40
_SUBPIXEL_SHIFT = 4  # fillPoly fixed-point bits: 1/16 px vertices give smoother outlines

# (48, 2) outline of the ellipse inscribed in the unit box.
_CIRCLE = np.array([(0.5 + 0.5 * math.cos(angle), 0.5 + 0.5 * math.sin(angle))
                    for angle in (2 * math.pi * k / 48 for k in range(48))])


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


def _colour(rng: np.random.Generator, hue: float, saturation: Tuple[float, float],
            value: Tuple[float, float]) -> np.ndarray:
    """An HSV colour, saturation and value drawn from (lo, hi) ranges, as float BGR (0-255)."""
    rgb = colorsys.hsv_to_rgb(hue, rng.uniform(*saturation), rng.uniform(*value))
    return np.array(rgb[::-1]) * 255.0


def _upsample(grid: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear upsampling of a (gh, gw, 3) grid to (height, width, 3), element-wise numpy only."""
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
    base = _colour(rng, rng.uniform(), style.bg_saturation, style.bg_value)
    grid_h, grid_w = int(rng.integers(3, 7)), int(rng.integers(3, 7))
    grid = rng.normal(0.0, style.texture_amp, size=(grid_h, grid_w, 3))
    # Broadcasting may pick a non-C memory order, which OpenCV's drawing functions reject.
    img = np.ascontiguousarray(base + _upsample(grid, height, width))
    for _ in range(style.clutter_lines):
        pts = rng.integers(0, [width, height, width, height])
        colour = _colour(rng, rng.uniform(), style.fg_saturation, style.fg_value)
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
            raise RuntimeError(
                f'could not place {num_objects} shapes in a {width}x{height} image with '
                f'max_occluded_frac={style.max_occluded_frac}; lower max_objects or max_size_frac')
        visible = [vis & ~mask for vis in visible] + [mask]
        masks.append(mask)
        # Of a few random hues keep the one farthest from earlier shapes, so overlaps stay distinct.
        cands = rng.uniform(size=6)
        gaps = [min([min(abs(c - h), 1 - abs(c - h)) for h in hues], default=1.0) for c in cands]
        hues.append(float(cands[int(np.argmax(gaps))]))
        img[mask] = _colour(rng, hues[-1], style.fg_saturation, style.fg_value)
        x, y, w, h = cv2.boundingRect(mask.astype(np.uint8))
        # +0.5: fillPoly puts integer vertices on pixel centres, COCO polygons use pixel edges.
        poly = [round(float(v), 2) for v in (pts + 0.5).ravel()]
        anns.append(dict(category_id=label + 1, bbox=[float(x), float(y), float(w), float(h)],
                         area=float(mask.sum()), segmentation=[poly], iscrowd=0))
    img += rng.normal(0.0, style.noise_std, size=img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), anns
