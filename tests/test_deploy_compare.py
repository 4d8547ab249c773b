"""The detection comparison of the deploy checks, on constructed outputs.

What a lower precision (OpenVINO's bf16 on AMX / AVX512-BF16 CPUs) does to a
top-k output is built here by hand, so these hold on every CPU: close scores
swap ranks, a detection at the top-k boundary is replaced by its neighbour,
and real errors (a wrong label, a moved box, a wrong score) still show.
"""
import numpy as np
import pytest

from cdetr_mmdet.deploy.compare import compare_detections, within

SIZES = np.array([[100, 200]])  # (h, w)


def top_k_output(seed=0, k=8):
    """(scores, labels, boxes) of one image: two clusters of close scores."""
    rng = np.random.default_rng(seed)
    scores = np.concatenate([0.75 - 1e-4 * np.arange(k // 2),
                             0.65 - 1e-4 * np.arange(k - k // 2)])
    labels = np.array([1] * (k // 2) + [0] * (k - k // 2))
    xy = rng.uniform(0, 80, (k, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(10, 20, (k, 2))], 1)
    return (scores[None].astype(np.float32), labels[None],
            boxes[None].astype(np.float32))


def bf16(x):
    """Round float32 values to bfloat16 (8 significant bits), as float32."""
    bits = np.asarray(x, np.float32).view(np.uint32)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.astype(np.uint32).view(np.float32)


def test_identical_outputs_compare_every_detection():
    ref = top_k_output()
    diffs = compare_detections(ref, ref, SIZES, 1e-4)
    assert diffs == dict(score=0., box=0., box_px=0., label_mismatches=0,
                         boundary_ties=0, compared=8)


def test_bf16_rounding_and_swapped_ranks_are_paired_not_skipped():
    scores, labels, boxes = top_k_output()
    # bf16 scores tie within each cluster and come out in another order.
    order = np.array([3, 1, 2, 0, 7, 5, 6, 4])
    out = (bf16(scores)[:, order], labels[:, order],
           (boxes + 0.4)[:, order])
    diffs = compare_detections((scores, labels, boxes), out, SIZES, 5e-2)
    assert diffs['compared'] == 8 and diffs['boundary_ties'] == 0, diffs
    assert diffs['label_mismatches'] == 0
    assert diffs['box_px'] == pytest.approx(0.4, abs=1e-4)
    assert 0 < diffs['score'] <= 2 ** -8  # bf16's relative step at < 1
    assert within(diffs, 5e-2)


def test_a_detection_replaced_at_the_top_k_boundary_is_a_tie():
    scores, labels, boxes = top_k_output()
    out_scores, out_boxes = scores.copy(), boxes.copy()
    # The lowest-ranked detection fell off; its neighbour (another query,
    # another box) came in at the same score.
    out_scores[0, -1] -= 2e-5
    out_boxes[0, -1] = [150, 5, 190, 40]
    diffs = compare_detections((scores, labels, boxes),
                               (out_scores, labels, out_boxes), SIZES, 1e-4)
    assert diffs['boundary_ties'] == 1 and diffs['compared'] == 7, diffs
    assert within(diffs, 1e-4)


def test_a_moved_box_above_the_boundary_is_measured():
    scores, labels, boxes = top_k_output()
    moved = boxes.copy()
    moved[0, 0] += 30  # a top detection, far from the boundary
    diffs = compare_detections((scores, labels, boxes),
                               (scores, labels, moved), SIZES, 1e-4)
    assert diffs['box_px'] == pytest.approx(30)
    assert not within(diffs, 1e-4)


def test_a_wrong_label_above_the_boundary_is_a_mismatch():
    scores, labels, boxes = top_k_output()
    wrong = labels.copy()
    wrong[0, 0] = 3
    diffs = compare_detections((scores, labels, boxes),
                               (scores, wrong, boxes), SIZES, 1e-4)
    assert diffs['label_mismatches'] == 1, diffs  # the pair left over
    assert not within(diffs, 1e-4)


def test_a_wrong_score_above_the_boundary_is_measured():
    scores, labels, boxes = top_k_output()
    off = scores.copy()
    off[0, 1] -= 0.01
    diffs = compare_detections((scores, labels, boxes),
                               (off, labels, boxes), SIZES, 1e-4)
    assert diffs['score'] == pytest.approx(0.01, abs=1e-6)
    assert not within(diffs, 1e-4)


def test_shapes_must_agree():
    ref = top_k_output(k=8)
    with pytest.raises(ValueError, match=r'output shapes differ: \(1, 8\) '
                       r'and \(1, 6\)'):
        compare_detections(ref, top_k_output(k=6), SIZES)
