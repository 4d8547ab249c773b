"""Where an attention map's mass lies relative to a box (for the statistics).

Each key is a feature cell; its centre in input pixels is
``((j + 0.5) * stride_x, (i + 0.5) * stride_y)``. A cell is *in* the box when
its centre lies in the box expanded by ``margin`` cells on every side (the
default half a cell: exactly the cells that overlap the box). Cells in the box
are split by their normalised position ``(u, v)`` in the expanded box: the
core (``min(u, 1-u, v, 1-v) >= 0.25``, a quarter of the area) is ``inside``,
the rest goes to the nearest edge band (``left``, ``right``, ``top``,
``bottom``; each about 19 % of the area), and cells outside the box to
``outside``.
"""
from typing import Sequence, Tuple

import torch
from torch import Tensor

REGIONS = ('inside', 'left', 'right', 'top', 'bottom', 'outside')


def cell_centres(feat_size: Tuple[int, int],
                 batch_input_shape: Sequence[int]) -> Tuple[Tensor, Tensor]:
    """Cell centres in input pixels, (H, W) each for x and y."""
    h, w = feat_size
    stride_y, stride_x = batch_input_shape[0] / h, batch_input_shape[1] / w
    ys = (torch.arange(h, dtype=torch.float32) + 0.5) * stride_y
    xs = (torch.arange(w, dtype=torch.float32) + 0.5) * stride_x
    return xs[None, :].expand(h, w), ys[:, None].expand(h, w)


def region_index(box: Sequence[float], feat_size: Tuple[int, int],
                 batch_input_shape: Sequence[int],
                 margin: float = 0.5) -> Tensor:
    """Each cell's region (an index into :data:`REGIONS`), (H, W) long.

    Args:
        box (Sequence[float]): xyxy in input pixels.
        feat_size (tuple[int, int]): (H, W) of the feature map.
        batch_input_shape (Sequence[int]): (H_in, W_in) of the padded input.
        margin (float): Expansion on each side, in cells. Defaults to 0.5.
    """
    xs, ys = cell_centres(feat_size, batch_input_shape)
    mx = margin * batch_input_shape[1] / feat_size[1]
    my = margin * batch_input_shape[0] / feat_size[0]
    x0, y0, x1, y1 = box[0] - mx, box[1] - my, box[2] + mx, box[3] + my
    u = (xs - x0) / max(x1 - x0, 1e-6)
    v = (ys - y0) / max(y1 - y0, 1e-6)
    edges = torch.stack([u, 1 - u, v, 1 - v])  # left, right, top, bottom
    nearest, which = edges.min(0)
    region = torch.where(nearest >= 0.25, torch.zeros_like(which), which + 1)
    # Strict: a cell that only touches the expanded box is out.
    inside_box = (u > 0) & (u < 1) & (v > 0) & (v < 1)
    return torch.where(inside_box, region, torch.full_like(region, 5))


def region_mass(attn: Tensor, regions: Tensor) -> Tensor:
    """Mass per region of maps ``(..., H, W)`` -> ``(..., len(REGIONS))``."""
    one_hot = torch.nn.functional.one_hot(regions.flatten(), len(REGIONS))
    return attn.flatten(-2) @ one_hot.to(attn.dtype)
