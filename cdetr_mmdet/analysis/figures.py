"""Pictures of the decoder cross-attention (the paper's Figure 4 layout).

matplotlib (Agg) is imported inside the functions, so importing this module
costs nothing for a model that never draws.
"""
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .cross_attention import CrossAttentionMaps, analyze_cross_attention

MAP_ROWS = ('spatial', 'content', 'combined')


def _pyplot():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def load_image(model: nn.Module, path: str) -> Tuple[Tensor, list, np.ndarray]:
    """Run the model config's test pipeline and preprocessor on one image.

    Args:
        model (nn.Module): A detector from ``mmdet.apis.init_detector`` (it
            carries its config as ``model.cfg``).
        path (str): Image file.

    Returns:
        tuple: ``inputs`` (1, 3, H_in, W_in), the data samples, and the image
        as the model sees it (resized, RGB uint8, (h, w, 3) of ``img_shape``).
    """
    import mmcv
    from mmcv.transforms import Compose
    from mmdet.utils import get_test_pipeline_cfg
    from mmengine.dataset import pseudo_collate
    pipeline = [step for step in get_test_pipeline_cfg(model.cfg)
                if 'LoadAnnotations' not in step['type']]
    data = Compose(pipeline)(dict(img_path=str(path), img_id=0))
    batch = model.data_preprocessor(pseudo_collate([data]), False)
    sample = batch['data_samples'][0]
    h, w = sample.metainfo['img_shape']
    image = mmcv.imresize(mmcv.imread(str(path), channel_order='rgb'), (w, h))
    return batch['inputs'], batch['data_samples'], image


def upsample_map(attn: Tensor, batch_input_shape: Sequence[int],
                 img_shape: Sequence[int]) -> np.ndarray:
    """A (H, W) feature-grid map -> the unpadded input image's (h, w) pixels.

    The feature grid covers the padded batch input, so the map is resized to
    ``batch_input_shape`` (bilinear) and cropped to ``img_shape``.
    """
    big = F.interpolate(attn[None, None].float(), size=tuple(batch_input_shape),
                        mode='bilinear', align_corners=False)[0, 0]
    return big[:img_shape[0], :img_shape[1]].numpy()


def draw_query_attention(image: np.ndarray, maps: CrossAttentionMaps,
                         meta: dict, batch_index: int, query: int,
                         layer: int, heads: Sequence[int], title: str,
                         out_path: Path, panel_inches: float = 1.5,
                         dpi: int = 80) -> Path:
    """One query's spatial / content / combined maps, one column per head.

    Each map is upsampled, overlaid on the image (colour range per panel, from
    0 to the map's peak weight, which is printed in its corner) and shown with
    the predicted box (white) and, for conditional models, the reference point
    (red cross).

    Args:
        image (np.ndarray): RGB image as fed to the model, (h, w, 3).
        maps (CrossAttentionMaps): The analysis of its batch.
        meta (dict): Its data sample's metainfo (``img_shape``,
            ``batch_input_shape``).
        batch_index (int): The image's index in the batch.
        query (int): Query index.
        layer (int): Decoder layer index (0-based).
        heads (Sequence[int]): Heads to draw, one column each.
        title (str): Figure title.
        out_path (Path): PNG to write.
        panel_inches (float): Size of one panel. Defaults to 1.5.
        dpi (int): Resolution. Defaults to 80.

    Returns:
        Path: ``out_path``.
    """
    plt = _pyplot()
    h, w = meta['img_shape']
    box = maps.boxes[batch_index, query].tolist()
    ref = (None if maps.references is None else
           (maps.references[batch_index, query] * torch.tensor([w, h])).tolist())
    fig, axes = plt.subplots(len(MAP_ROWS), len(heads), squeeze=False,
                             figsize=(panel_inches * len(heads) + 0.6,
                                      panel_inches * len(MAP_ROWS) + 0.5))
    for row, name in enumerate(MAP_ROWS):
        for col, head in enumerate(heads):
            ax = axes[row, col]
            draw_panel(ax, image, getattr(maps, name)[layer, batch_index, head, query],
                       meta, box, ref)
            if row == 0:
                ax.set_title(f'head {head}', fontsize=8)
            if col == 0:
                ax.set_ylabel(name, fontsize=8)
    fig.suptitle(title, fontsize=8)
    return save_figure(fig, out_path, dpi)


def draw_panel(ax, image: np.ndarray, attn: Tensor, meta: dict, box: Sequence[float],
               ref: Optional[Sequence[float]]) -> None:
    """One map on one matplotlib axis: the image, the upsampled map over it, the
    predicted box (white), the reference point (red cross, None: DETR has none)
    and the map's peak weight in the corner.

    Args:
        ax: A matplotlib ``Axes``.
        image (np.ndarray): RGB image as fed to the model, (h, w, 3).
        attn (Tensor): The map on the feature grid, (H, W).
        meta (dict): The image's metainfo (``img_shape``, ``batch_input_shape``).
        box (Sequence[float]): xyxy in pixels of ``img_shape``.
        ref (Sequence[float], optional): (x, y) in pixels of ``img_shape``.
    """
    from matplotlib.patches import Rectangle
    h, w = meta['img_shape']
    ax.imshow(image)
    ax.imshow(upsample_map(attn, meta['batch_input_shape'], (h, w)),
              cmap='jet', alpha=0.5, vmin=0.0)
    ax.add_patch(Rectangle((box[0], box[1]), box[2] - box[0], box[3] - box[1],
                           fill=False, lw=1.2, edgecolor='white'))
    if ref is not None:
        ax.plot(*ref, marker='x', color='red', ms=6, mew=1.5)
    # Colours are per panel: the peak weight tells a sharp map from a flat one
    # (a flat map's weight is 1 / unpadded keys).
    ax.text(1, 1, f'max {float(attn.max()):.2f}', fontsize=6, va='top',
            color='white', bbox=dict(facecolor='black', alpha=0.6, pad=1, lw=0))
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_xticks([])
    ax.set_yticks([])


def save_figure(fig, out_path, dpi: int) -> Path:
    """Lay out, write (creating the folder) and close a matplotlib figure as a
    256-colour PNG; returns its path."""
    plt = _pyplot()
    fig.tight_layout()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=dpi)
    plt.close(fig)
    save_palette_png(out_path)
    return out_path


def draw_spatial_comparison(image: np.ndarray, rows: Sequence[tuple], title: str,
                            out_path: Path, panel_inches: float = 1.2,
                            dpi: int = 80) -> Path:
    """The paper's Figure-1 layout: spatial maps only, one row per model / epoch.

    Args:
        image (np.ndarray): RGB image as fed to the models, (h, w, 3).
        rows (Sequence[tuple]): ``(label, spatial, box, reference, meta)`` per
            row: the row's label, one query's spatial maps (heads, H, W), its
            predicted box (xyxy pixels), its reference point (x, y pixels, or
            None) and the image's metainfo in that model's batch.
        title (str): Figure title.
        out_path (Path): PNG to write.
        panel_inches (float): Size of one panel. Defaults to 1.2.
        dpi (int): Resolution. Defaults to 80.

    Returns:
        Path: ``out_path``.
    """
    plt = _pyplot()
    heads = max(len(row[1]) for row in rows)
    fig, axes = plt.subplots(len(rows), heads, squeeze=False,
                             figsize=(panel_inches * heads + 1.2,
                                      panel_inches * len(rows) + 0.4))
    for r, (label, spatial, box, ref, meta) in enumerate(rows):
        for head in range(heads):
            ax = axes[r, head]
            if head >= len(spatial):  # a model with fewer heads than the widest
                ax.axis('off')
                continue
            draw_panel(ax, image, spatial[head], meta, box, ref)
            if r == 0:
                ax.set_title(f'head {head}', fontsize=8)
            if head == 0:
                ax.set_ylabel(label, fontsize=7)
    fig.suptitle(title, fontsize=8)
    return save_figure(fig, out_path, dpi)


def save_palette_png(path: Path) -> None:
    """Rewrite an RGB(A) PNG with a 256-colour palette (about 3x smaller)."""
    from PIL import Image
    with Image.open(path) as img:
        small = img.convert('RGB').quantize(colors=256)
    small.save(path, optimize=True)


def top_queries(maps: CrossAttentionMaps, batch_index: int, top_k: int,
                score_thr: float = 0.0) -> List[int]:
    """The best-scoring queries of one image (at most ``top_k``, score >= thr)."""
    scores = maps.scores[batch_index]
    order = scores.argsort(descending=True)[:top_k]
    return [int(q) for q in order if scores[q] >= score_thr]


def check_layer_heads(model: nn.Module, layer: int,
                      heads: Optional[Sequence[int]]) -> Tuple[int, List[int]]:
    """Validate a decoder layer index (negative counts from the end) and heads.

    Returns:
        tuple[int, list[int]]: The non-negative layer and the heads (all
        heads when ``heads`` is None or empty).

    Raises:
        ValueError: Naming the allowed values.
    """
    num_layers = len(model.decoder.layers)
    num_heads = model.decoder.layers[0].cross_attn.num_heads
    if not -num_layers <= layer < num_layers:
        raise ValueError(f'--layer {layer} is out of range: this model has '
                         f'{num_layers} decoder layers, allowed '
                         f'{-num_layers}..{num_layers - 1}')
    heads = list(range(num_heads)) if not heads else list(heads)
    bad = [h for h in heads if not 0 <= h < num_heads]
    if bad:
        raise ValueError(f'--heads {bad} out of range: this model has '
                         f'{num_heads} heads, allowed 0..{num_heads - 1}')
    return layer % num_layers, heads


def draw_image_attention(model: nn.Module, image_path: str, out_dir: Path,
                         classes: Sequence[str], layer: int = -1,
                         heads: Optional[Sequence[int]] = None,
                         top_k: int = 3, score_thr: float = 0.0,
                         log=print) -> List[Path]:
    """Analyse one image and write one Figure-4 PNG per top detection.

    Args:
        model (nn.Module): Detector from ``init_detector`` in eval mode.
        image_path (str): The image.
        out_dir (Path): Where the PNGs go
            (``<stem>_det<i>_q<query>_layer<l>.png``).
        classes (Sequence[str]): Class names.
        layer (int): Decoder layer, negative from the end. Defaults to -1.
        heads (Sequence[int], optional): Heads to draw. Defaults to all.
        top_k (int): Detections to draw. Defaults to 3.
        score_thr (float): Minimum score. Defaults to 0.0.
        log (callable): Progress printer. Defaults to ``print``.

    Returns:
        list[Path]: The written PNGs.
    """
    layer, heads = check_layer_heads(model, layer, heads)
    if not Path(image_path).is_file():
        raise FileNotFoundError(f'no such image: {image_path}')
    inputs, samples, image = load_image(model, image_path)
    maps = analyze_cross_attention(model, inputs, samples)
    meta = samples[0].metainfo
    queries = top_queries(maps, 0, top_k, score_thr)
    if not queries:
        log(f'no detection with score >= {score_thr} in {image_path}')
    written = []
    stem = Path(image_path).stem
    for i, query in enumerate(queries):
        label = int(maps.labels[0, query])
        name = classes[label] if label < len(classes) else str(label)
        title = (f'{Path(image_path).name}: {name} {maps.scores[0, query]:.2f}'
                 f' (query {query}) - decoder layer {layer + 1}/'
                 f'{maps.num_layers} - {maps.kind}')
        out = draw_query_attention(
            image, maps, meta, 0, query, layer, heads, title,
            Path(out_dir) / f'{stem}_det{i}_q{query}_layer{layer + 1}.png')
        log(f'[{i + 1}/{len(queries)}] {out}')
        written.append(out)
    return written
