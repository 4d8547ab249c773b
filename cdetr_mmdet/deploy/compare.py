"""Compare two top-k detection outputs of the same batch by pairing them."""
from typing import Dict, Optional, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

# Stands for "never pair these" (another label) in the assignment.
_FORBIDDEN = 1e12


def compare_detections(ref: Sequence[np.ndarray], out: Sequence[np.ndarray],
                       sizes: np.ndarray, tol: float = 1e-4,
                       box_tol: Optional[float] = None) -> Dict[str, float]:
    """Differences between two (scores, labels, boxes) batch outputs.

    The detections of each image are paired one to one (Hungarian
    assignment over detections of the same label, cost: the larger of the
    score difference over ``tol`` and the box difference, in units of the
    image size, over ``box_tol``), so ranks that swap because their scores
    are close (ties, or a lower precision such as bf16) are still compared
    with their own counterpart. A detection is left out of the comparison
    only when it can have fallen off the other output's top-k: it has no
    partner of its label, or only a partner beyond the tolerances, and its
    score is within ``tol`` of the lowest kept score of either output (the
    top-k boundary); it is counted in ``boundary_ties``. Any other detection
    without a partner of its label is a ``label_mismatch``.

    Args:
        ref (Sequence[np.ndarray]): ``scores`` (bs, k), ``labels`` (bs, k),
            ``boxes`` (bs, k, 4) xyxy in input pixels, e.g. PyTorch's.
        out (Sequence[np.ndarray]): The same from a runtime.
        sizes (np.ndarray): (bs, 2) unpadded input (h, w) of each image; box
            differences are measured in units of the image size.
        tol (float): Score tolerance (pairing and the top-k boundary).
            Defaults to 1e-4.
        box_tol (float, optional): Box tolerance (fraction of the image
            size) used for pairing. Defaults to ``tol``.

    Returns:
        dict: over the compared pairs, ``score`` (max abs), ``box`` (max abs,
        normalised by the image size) and ``box_px`` (max abs in input
        pixels); ``compared`` (pairs measured), ``boundary_ties`` (left out
        at the top-k boundary, see above) and ``label_mismatches``.
    """
    ref_scores, ref_labels, ref_boxes = (np.asarray(a) for a in ref)
    out_scores, out_labels, out_boxes = (np.asarray(a) for a in out)
    if ref_scores.shape != out_scores.shape:
        raise ValueError(f'output shapes differ: {ref_scores.shape} and '
                         f'{out_scores.shape}')
    box_tol = tol if box_tol is None else box_tol
    score = box = box_px = 0.
    mismatches = boundary_ties = compared = 0
    for b in range(ref_scores.shape[0]):
        boundary = min(ref_scores[b].min(), out_scores[b].min())
        h, w = sizes[b]
        scale = np.array([w, h, w, h], np.float64)
        score_diff = np.abs(ref_scores[b][:, None].astype(np.float64)
                            - out_scores[b][None, :])  # (k, k)
        box_diff_px = np.abs(ref_boxes[b][:, None].astype(np.float64)
                             - out_boxes[b][None, :])  # (k, k, 4)
        box_diff = (box_diff_px / scale).max(-1)  # (k, k)
        cost = np.maximum(score_diff / tol, box_diff / box_tol)
        same_label = ref_labels[b][:, None] == out_labels[b][None, :]
        rows, cols = linear_sum_assignment(
            np.where(same_label, cost, _FORBIDDEN))
        for i, j in zip(rows, cols):
            at_boundary = ref_scores[b, i] - boundary <= tol or \
                out_scores[b, j] - boundary <= tol
            if not same_label[i, j] or cost[i, j] > 1:
                # Either side's counterpart may lie just outside the other
                # top-k: nothing to compare then.
                if at_boundary:
                    boundary_ties += 1
                    continue
                if not same_label[i, j]:
                    mismatches += 1
                    continue
            compared += 1
            score = max(score, float(score_diff[i, j]))
            box = max(box, float(box_diff[i, j]))
            box_px = max(box_px, float(box_diff_px[i, j].max()))
    return dict(score=score, box=box, box_px=box_px,
                label_mismatches=mismatches, boundary_ties=boundary_ties,
                compared=compared)


def within(diffs: Dict[str, float], tol: float) -> bool:
    """Whether scores and normalised boxes are within ``tol``, labels equal."""
    return (diffs['score'] <= tol and diffs['box'] <= tol
            and diffs['label_mismatches'] == 0)
