"""Compare two top-k detection outputs of the same batch, tie-aware."""
from typing import Dict, Sequence

import numpy as np


def compare_detections(ref: Sequence[np.ndarray], out: Sequence[np.ndarray],
                       sizes: np.ndarray, tol: float = 1e-4
                       ) -> Dict[str, float]:
    """Differences between two (scores, labels, boxes) batch outputs.

    Top-k ranks whose scores tie (within ``tol``) may come out in another
    order: a detection at rank ``i`` that differs is matched to the detection
    of ``out`` with the same label and the closest box among ranks whose
    score is within ``tol`` of ``ref``'s; only if none is found does it count
    as a label mismatch. A detection whose score ties with the last kept
    score (the top-k boundary) may have its counterpart just outside ``out``'s
    top-k: it is counted in ``boundary_ties`` and not compared.

    Args:
        ref (Sequence[np.ndarray]): ``scores`` (bs, k), ``labels`` (bs, k),
            ``boxes`` (bs, k, 4) xyxy in input pixels, e.g. PyTorch's.
        out (Sequence[np.ndarray]): The same from a runtime.
        sizes (np.ndarray): (bs, 2) unpadded input (h, w) of each image; box
            differences are measured in units of the image size.
        tol (float): Score tolerance for ties. Defaults to 1e-4.

    Returns:
        dict: ``score`` (max abs), ``box`` (max abs, normalised by the image
        size), ``box_px`` (max abs in input pixels) and ``label_mismatches``
        (count of detections without a match), ``boundary_ties`` and
        ``compared`` (detections matched and measured).
    """
    ref_scores, ref_labels, ref_boxes = (np.asarray(a) for a in ref)
    out_scores, out_labels, out_boxes = (np.asarray(a) for a in out)
    if ref_scores.shape != out_scores.shape:
        raise ValueError(f'output shapes differ: {ref_scores.shape} and '
                         f'{out_scores.shape}')
    score = box = box_px = 0.
    mismatches = boundary_ties = compared = 0
    for b in range(ref_scores.shape[0]):
        boundary = min(ref_scores[b].min(), out_scores[b].min())
        h, w = sizes[b]
        scale = np.array([w, h, w, h], np.float64)
        for i in range(ref_scores.shape[1]):
            candidates = np.flatnonzero(
                (np.abs(out_scores[b] - ref_scores[b, i]) <= tol)
                & (out_labels[b] == ref_labels[b, i]))
            if ref_labels[b, i] == out_labels[b, i]:
                candidates = np.union1d(candidates, [i])
            if ref_scores[b, i] - boundary <= tol:
                boundary_ties += 1
                continue
            if not len(candidates):
                mismatches += 1
                continue
            diffs = np.abs(out_boxes[b, candidates].astype(np.float64)
                           - ref_boxes[b, i])  # (n, 4)
            j = int(np.argmin((diffs / scale).max(1)))
            compared += 1
            score = max(score, float(abs(out_scores[b, candidates[j]]
                                         - ref_scores[b, i])))
            box = max(box, float((diffs[j] / scale).max()))
            box_px = max(box_px, float(diffs[j].max()))
    return dict(score=score, box=box, box_px=box_px,
                label_mismatches=mismatches, boundary_ties=boundary_ties,
                compared=compared)


def within(diffs: Dict[str, float], tol: float) -> bool:
    """Whether scores and normalised boxes are within ``tol``, labels equal."""
    return (diffs['score'] <= tol and diffs['box'] <= tol
            and diffs['label_mismatches'] == 0)
