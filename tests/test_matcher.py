"""The batched Hungarian matcher."""
import itertools

import pytest
import torch
from mmdet.registry import TASK_UTILS

from cdetr_mmdet.models import CdetrHungarianMatcher


def random_inputs(num_layers=2, bs=2, nq=5, nc=3, sizes=(3, 2), seed=0):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(num_layers, bs, nq, nc, generator=gen)
    boxes = torch.rand(num_layers, bs, nq, 4, generator=gen) * .5 + .2
    labels = [torch.randint(nc, (n, ), generator=gen) for n in sizes]
    gts = [torch.rand(n, 4, generator=gen) * .5 + .2 for n in sizes]
    return logits, boxes, labels, gts


def pairs_of(match, layer, image, offset=0):
    keep = (match.layer == layer) & (match.image == image)
    return sorted(zip(match.query[keep].tolist(),
                      (match.gt[keep] - offset).tolist()))


def test_built_from_config_with_its_cost_weights():
    """The config's weights reach the costs (class weight 0: class ignored)."""
    matcher = TASK_UTILS.build(dict(type='CdetrHungarianMatcher',
                                    cost_class=0., cost_bbox=5.,
                                    cost_giou=2.))
    logits, boxes, labels, gts = random_inputs(num_layers=1, bs=1,
                                               sizes=(3, ))
    terms = matcher.cost_terms(logits[0, 0], boxes[0, 0], labels[0], gts[0])
    assert torch.all(terms['cls'] == 0)
    other = matcher.match(-logits, boxes, labels, gts)  # flipped classes
    assert pairs_of(other, 0, 0) == pairs_of(
        matcher.match(logits, boxes, labels, gts), 0, 0)


def test_optimal_against_brute_force():
    matcher = CdetrHungarianMatcher()
    logits, boxes, labels, gts = random_inputs(num_layers=1, bs=1, nq=5,
                                               sizes=(3, ))
    match = matcher.match(logits, boxes, labels, gts)
    cost = sum(matcher.cost_terms(logits[0, 0], boxes[0, 0], labels[0],
                                  gts[0]).values())
    best = min(sum(cost[q, g] for g, q in enumerate(perm))
               for perm in itertools.permutations(range(5), 3))
    got = sum(cost[q, g] for q, g in pairs_of(match, 0, 0))
    assert len(pairs_of(match, 0, 0)) == 3
    torch.testing.assert_close(got, best)


def test_batched_equals_per_image_and_per_layer():
    matcher = CdetrHungarianMatcher()
    logits, boxes, labels, gts = random_inputs(num_layers=3, bs=3,
                                               sizes=(3, 0, 2))
    batched = matcher.match(logits, boxes, labels, gts)
    offsets = [0, 3, 3]
    for layer in range(3):
        for img in range(3):
            single = matcher.match(logits[layer:layer + 1, img:img + 1],
                                   boxes[layer:layer + 1, img:img + 1],
                                   labels[img:img + 1], gts[img:img + 1])
            assert pairs_of(batched, layer, img, offsets[img]) == \
                pairs_of(single, 0, 0)


def test_empty_targets():
    matcher = CdetrHungarianMatcher()
    logits, boxes, labels, gts = random_inputs(sizes=(0, 0))
    match = matcher.match(logits, boxes, labels, gts)
    assert all(t.numel() == 0 for t in match)


def test_non_finite_cost_names_image_and_term():
    matcher = CdetrHungarianMatcher()
    logits, boxes, labels, gts = random_inputs()
    boxes[1, 1, 2] = float('nan')
    with pytest.raises(ValueError) as err:
        matcher.match(logits, boxes, labels, gts, ['a.png', 'b.png'])
    message = str(err.value)
    assert 'b.png' in message and 'layer 1' in message
    assert "'bbox'" in message and "'giou'" in message
    assert "'cls'" not in message


def test_costs_are_fp32_under_autocast():
    """Under bf16 autocast the costs stay fp32: the same pairs as outside."""
    matcher = CdetrHungarianMatcher()
    logits, boxes, labels, gts = random_inputs(num_layers=3, bs=2, nq=20,
                                               sizes=(6, 4))
    logits = logits.bfloat16().float()  # a bf16 model's class outputs
    expected = matcher.match(logits, boxes, labels, gts)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        got = matcher.match(logits, boxes, labels, gts)
        terms = matcher.cost_terms(logits[0, 0], boxes[0, 0], labels[0],
                                   gts[0])
    assert all(t.dtype == torch.float32 for t in terms.values())
    for layer in range(3):
        for img, offset in ((0, 0), (1, 6)):
            assert pairs_of(got, layer, img, offset) == pairs_of(
                expected, layer, img, offset)
    assert len(got.gt) == 3 * (6 + 4)
