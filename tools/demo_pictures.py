"""The demo's detection pictures and a score threshold chosen from the val set (lab code, beside tools/demo.py)."""
import json
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from cdetr_mmdet.analysis.figures import save_figure

# One colour per class (matplotlib tab10), the same in both panels.
COLORS = ('tab:red', 'tab:blue', 'tab:green', 'tab:orange', 'tab:purple',
          'tab:brown', 'tab:pink', 'tab:olive', 'tab:cyan', 'tab:gray')


def _iou(box: Sequence[float], others: np.ndarray) -> np.ndarray:
    """IoU of one xywh box with (n, 4) xywh boxes."""
    if len(others) == 0:
        return np.zeros(0)
    x0 = np.maximum(box[0], others[:, 0])
    y0 = np.maximum(box[1], others[:, 1])
    x1 = np.minimum(box[0] + box[2], others[:, 0] + others[:, 2])
    y1 = np.minimum(box[1] + box[3], others[:, 1] + others[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    return inter / (box[2] * box[3] + others[:, 2] * others[:, 3] - inter)


def threshold_table(results_file: str, ann_file: str,
                    iou_thr: float = 0.5) -> Dict:
    """Precision, recall and duplicates of the detections above each score.

    Identical boxes of one image (one query listed under several classes) count
    once, with their best score. Detections are matched greedily in score order
    to unmatched ground truth of their class and image with IoU >= ``iou_thr``; an unmatched detection whose
    best same-class overlap is an already matched box counts as a duplicate.

    Args:
        results_file (str): COCO results JSON (``image_id``, ``category_id``,
            ``bbox`` xywh, ``score``), e.g. the demo's ``results.bbox.json``.
        ann_file (str): The COCO annotation JSON.
        iou_thr (float): Match IoU. Defaults to 0.5.

    Returns:
        dict: ``scores`` (descending), cumulative ``tp`` and ``duplicates``
        (arrays over the sorted detections) and ``num_gts``.
    """
    dets = sorted(json.loads(Path(results_file).read_text()),
                  key=lambda d: -d['score'])
    # A sigmoid head's top-k over (query, class) can list one query's box
    # under several classes; count (and draw) each box once, its best class.
    seen = set()
    dets = [d for d in dets if (d['image_id'], tuple(d['bbox'])) not in seen
            and not seen.add((d['image_id'], tuple(d['bbox'])))]
    gts: Dict[Tuple[int, int], np.ndarray] = {}
    for ann in json.loads(Path(ann_file).read_text())['annotations']:
        key = (ann['image_id'], ann['category_id'])
        gts[key] = np.concatenate([gts.get(key, np.zeros((0, 4))),
                                   np.asarray([ann['bbox']], float)])
    used = {key: np.zeros(len(v), bool) for key, v in gts.items()}
    tp, dup = np.zeros(len(dets)), np.zeros(len(dets))
    for i, det in enumerate(dets):
        key = (det['image_id'], det['category_id'])
        ious = _iou(det['bbox'], gts.get(key, np.zeros((0, 4))))
        if len(ious) == 0 or ious.max() < iou_thr:
            continue
        free = np.where(~used[key] & (ious >= iou_thr))[0]
        if len(free):
            used[key][free[ious[free].argmax()]] = True
            tp[i] = 1
        else:
            dup[i] = 1
    return dict(scores=np.asarray([d['score'] for d in dets]),
                tp=np.cumsum(tp), duplicates=np.cumsum(dup),
                num_gts=sum(len(v) for v in gts.values()))


def stats_at(table: Dict, thr: float) -> Dict:
    """Precision, recall, F1 and duplicate count of the detections >= thr."""
    n = int((table['scores'] >= thr).sum())
    tp = float(table['tp'][n - 1]) if n else 0.
    dup = int(table['duplicates'][n - 1]) if n else 0
    precision = tp / n if n else 1.
    recall = tp / max(table['num_gts'], 1)
    f1 = 2 * precision * recall / max(precision + recall, 1e-9)
    return dict(score_thr=round(float(thr), 3), detections=n, precision=round(precision, 3),
                recall=round(recall, 3), f1=round(f1, 3), duplicates=dup)


def best_f1_threshold(table: Dict) -> Dict:
    """The score threshold (a multiple of 0.01) with the best F1 at IoU 0.5."""
    candidates = [stats_at(table, t / 100) for t in range(1, 100)]
    return max(candidates, key=lambda s: (s['f1'], s['score_thr']))


def _overlaps(rect: Tuple[float, float, float, float],
              others: List[Tuple[float, float, float, float]]) -> bool:
    """Whether an (x0, y0, x1, y1) rectangle intersects any of ``others``."""
    return any(rect[0] < o[2] and o[0] < rect[2] and rect[1] < o[3] and o[1] < rect[3]
               for o in others)


def best_class_per_box(boxes: np.ndarray, labels: Sequence[int],
                        scores: Sequence[float]) -> List[int]:
    """Indices keeping each distinct box once, with its best score.

    Args:
        boxes (np.ndarray): (n, 4) boxes, sorted by descending score.
        labels (Sequence[int]): Their classes.
        scores (Sequence[float]): Their scores, descending.

    Returns:
        list[int]: The kept indices, in the input order.
    """
    seen, keep = set(), []
    for i, box in enumerate(boxes):
        key = tuple(np.round(np.asarray(box, float), 3))
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return keep


def draw_gt_and_prediction(image: np.ndarray, gt_boxes: np.ndarray,
                           gt_labels: Sequence[int], boxes: np.ndarray,
                           labels: Sequence[int], scores: Sequence[float],
                           classes: Sequence[str], out_path: Path,
                           title: str = '', scale: int = 4) -> Path:
    """Ground truth (left) beside the prediction (right), upscaled.

    Args:
        image (np.ndarray): RGB image, (h, w, 3).
        gt_boxes (np.ndarray): (n, 4) xyxy pixels.
        gt_labels (Sequence[int]): Their class indices.
        boxes (np.ndarray): (m, 4) predicted xyxy pixels.
        labels (Sequence[int]): Predicted classes.
        scores (Sequence[float]): Predicted scores.
        classes (Sequence[str]): Class names.
        out_path (Path): PNG to write.
        title (str): Figure title. Defaults to ''.
        scale (int): Upscaling factor of each panel. Defaults to 4.

    Returns:
        Path: ``out_path``.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle
    h, w = image.shape[:2]
    dpi = 100
    fig, axes = plt.subplots(1, 2, figsize=(2 * w * scale / dpi, h * scale / dpi + 0.4))
    panels = ((axes[0], gt_boxes, gt_labels, None, 'ground truth'),
              (axes[1], boxes, labels, scores, f'prediction ({len(boxes)})'))
    # Label extent in image pixels (9 pt text at this scale), to avoid overlaps.
    char_w, text_h = 6.5 / scale, 15. / scale
    for ax, bxs, lbls, scs, name in panels:
        ax.imshow(image, interpolation='nearest')
        placed: List[Tuple[float, float, float, float]] = []
        for i, (box, label) in enumerate(zip(bxs, lbls)):
            color = COLORS[int(label) % len(COLORS)]
            ax.add_patch(Rectangle((box[0], box[1]), box[2] - box[0], box[3] - box[1],
                                   fill=False, lw=2, edgecolor=color))
            text = classes[int(label)] + ('' if scs is None else f' {scs[i]:.2f}')
            # Above the box, not over the shape; below it when the top is
            # taken (image edge or another label).
            width = char_w * len(text)
            above = (box[0], box[1] - text_h, box[0] + width, box[1])
            below = (box[0], box[3], box[0] + width, box[3] + text_h)
            spot = above if above[1] >= 0 and not _overlaps(above, placed) else below
            placed.append(spot)
            ax.text(spot[0], spot[3], text, fontsize=9, color='white', va='bottom',
                    bbox=dict(facecolor=color, alpha=0.8, pad=1, lw=0))
        ax.set_title(name, fontsize=10)
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
        ax.axis('off')
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, out_path, dpi)


def gt_of_image(ann_file: str, file_name: str, classes: Sequence[str]
                ) -> Tuple[np.ndarray, List[int]]:
    """Ground-truth xyxy boxes and class indices of one image of a COCO file."""
    coco = json.loads(Path(ann_file).read_text())
    image_id = next(img['id'] for img in coco['images']
                    if Path(img['file_name']).name == file_name)
    names = {c['id']: c['name'] for c in coco['categories']}
    anns = [a for a in coco['annotations'] if a['image_id'] == image_id]
    boxes = np.asarray([[a['bbox'][0], a['bbox'][1], a['bbox'][0] + a['bbox'][2],
                         a['bbox'][1] + a['bbox'][3]] for a in anns]).reshape(-1, 4)
    return boxes, [classes.index(names[a['category_id']]) for a in anns]
