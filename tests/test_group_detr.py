"""Group DETR (``model.group_detr=K``): the invariants of the official branch.

Each test fails on one known way of getting Group DETR wrong: attention
leaking across groups, inference using more than the first group, matching
across groups, a normaliser without the factor K, query rows left out of the
gradient, or K = 1 changing.
"""
import itertools

import pytest
import torch
from mmdet.registry import MODELS

from cdetr_mmdet.models import CdetrHungarianMatcher
from cdetr_mmdet.models.decoder import ConditionalDecoderLayer
from conftest import make_batch, randomize_

K, N, D = 3, 4, 32  # groups, queries per group, width


def build_decoder(num_groups=K, spatial_query='csq', **switches):
    if switches.get('reference') == 'learned':
        switches['num_queries'] = N
    return MODELS.build(dict(
        type='CdetrTransformerDecoder', num_layers=2, num_groups=num_groups,
        spatial_query=spatial_query, **switches,
        layer_cfg=dict(embed_dims=D, num_heads=4, feedforward_channels=64,
                       dropout=0.))).train()


def group_model(cfg, group_detr=K, dropout=0.):
    """The tiny detector with K groups and no dropout (deterministic)."""
    cfg = cfg.copy()
    cfg.group_detr = group_detr
    for part in ('encoder', 'decoder'):
        cfg[part].layer_cfg.dropout = dropout
    model = MODELS.build(cfg)
    randomize_(model)
    return model


def decoder_inputs(bs=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    query_pos = torch.randn(bs, K * N, D, generator=gen)
    memory = torch.randn(bs, 6, D, generator=gen)
    memory_pos = torch.randn(bs, 6, D, generator=gen)
    return query_pos, memory, memory_pos


def other_groups_change(decoder, perturbed=2):
    """Max change of the other groups' outputs when one group's rows move."""
    query_pos, memory, memory_pos = decoder_inputs()
    moved = query_pos.clone()
    rows = slice(perturbed * N, (perturbed + 1) * N)
    moved[:, rows] += torch.randn_like(moved[:, rows])
    with torch.no_grad():
        outs = [decoder(torch.zeros_like(q), q, memory, memory_pos)[0]
                for q in (query_pos, moved)]  # (layers, bs, K * N, d)
    diff = (outs[0] - outs[1]).abs()
    own = diff[:, :, rows].max()
    others = torch.cat([diff[:, :, :rows.start], diff[:, :, rows.stop:]],
                       dim=2).max()
    return own.item(), others.item()


@pytest.mark.parametrize('spatial_query', ['csq', 'csq_i'])
def test_self_attention_stays_inside_each_group(spatial_query):
    own, others = other_groups_change(build_decoder(
        spatial_query=spatial_query))
    assert own > 1e-2  # the perturbation does reach its own group
    assert others <= 1e-6


@pytest.mark.parametrize('switches', [
    dict(reference='learned'), dict(reference='fixed'),
    *[dict(spatial_query=q) for q in ('csq_c', 'csq_t', 'csq_p')],
    *[dict(transform=t) for t in ('identity', 'scalar', 'block', 'full')],
], ids=lambda s: '-'.join(s.values()))
def test_every_ablation_switch_keeps_groups_apart(switches):
    own, others = other_groups_change(build_decoder(**switches))
    assert own > 1e-2 and others <= 1e-6


def test_the_group_test_fails_when_attention_crosses_groups(monkeypatch):
    """The check above detects a leak: self-attention over all K * N."""
    original = ConditionalDecoderLayer.self_attn_block

    def leaking(self, query, query_pos, num_groups=1):
        return original(self, query, query_pos, 1)

    monkeypatch.setattr(ConditionalDecoderLayer, 'self_attn_block', leaking)
    _, others = other_groups_change(build_decoder())
    assert others > 1e-3


def test_eval_uses_one_group_and_training_refuses_a_partial_one():
    decoder = build_decoder().eval()
    query_pos, memory, memory_pos = decoder_inputs()
    with torch.no_grad():  # eval: one group of any size, no grouping
        hidden, _ = decoder(torch.zeros_like(query_pos[:, :N]),
                            query_pos[:, :N], memory, memory_pos)
    assert hidden.shape == (2, 2, N, D)
    decoder.train()
    with pytest.raises(ValueError, match='do not split into 3 groups'):
        decoder(torch.zeros_like(query_pos[:, :5]), query_pos[:, :5],
                memory, memory_pos)


def test_detector_groups_are_independent_in_training(tiny_model_cfg):
    model = group_model(tiny_model_cfg).train()
    inputs, samples = make_batch()
    n = model.num_queries
    with torch.no_grad():
        cls_a, box_a = model(inputs, samples, mode='tensor')
        model.query_embedding.weight[n:2 * n] += 1.  # move group 1
        cls_b, box_b = model(inputs, samples, mode='tensor')
    assert cls_a.shape[2] == K * n
    for g in (0, 2):
        rows = slice(g * n, (g + 1) * n)
        torch.testing.assert_close(cls_b[:, :, rows], cls_a[:, :, rows],
                                   rtol=0, atol=1e-5)
        torch.testing.assert_close(box_b[:, :, rows], box_a[:, :, rows],
                                   rtol=0, atol=1e-5)
    assert (cls_b[:, :, n:2 * n] - cls_a[:, :, n:2 * n]).abs().max() > 1e-2


def test_eval_equals_the_k1_model_of_the_first_rows(tiny_model_cfg):
    grouped = group_model(tiny_model_cfg, dropout=0.1).eval()
    single = MODELS.build(tiny_model_cfg).eval()
    state = grouped.state_dict()
    state['query_embedding.weight'] = state[
        'query_embedding.weight'][:grouped.num_queries]
    single.load_state_dict(state, strict=True)
    inputs, samples = make_batch(sizes=((128, 160), (64, 64)))
    with torch.no_grad():
        ours = grouped(inputs, samples, mode='tensor')
        ref = single(inputs, samples, mode='tensor')
        dets = grouped.predict(inputs, [s.clone() for s in samples])
        ref_dets = single.predict(inputs, [s.clone() for s in samples])
    assert ours[0].shape[2] == grouped.num_queries
    for a, b in zip(ours, ref):
        assert torch.equal(a, b)
    for a, b in zip(dets, ref_dets):
        for key in ('bboxes', 'scores', 'labels'):
            assert torch.equal(a.pred_instances[key], b.pred_instances[key])


def random_match_inputs(num_layers=2, bs=2, nq=K * N, nc=3, sizes=(3, 2)):
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(num_layers, bs, nq, nc, generator=gen)
    boxes = torch.rand(num_layers, bs, nq, 4, generator=gen) * .5 + .2
    labels = [torch.randint(nc, (n, ), generator=gen) for n in sizes]
    gts = [torch.rand(n, 4, generator=gen) * .5 + .2 for n in sizes]
    return logits, boxes, labels, gts


def test_per_group_matching_equals_k_brute_force_matchings(monkeypatch):
    matcher = CdetrHungarianMatcher()
    logits, boxes, labels, gts = random_match_inputs()
    passes, copies = [], []
    cost_terms, cpu = matcher.cost_terms, torch.Tensor.cpu
    monkeypatch.setattr(matcher, 'cost_terms',
                        lambda *a: passes.append(1) or cost_terms(*a))
    monkeypatch.setattr(torch.Tensor, 'cpu',
                        lambda t, *a, **k: copies.append(1) or cpu(t, *a, **k))
    match = matcher.match(logits, boxes, labels, gts, num_groups=K)
    monkeypatch.undo()
    assert len(passes) == 1 and len(copies) == 1  # one pass, one host copy
    assert len(match.gt) == 2 * K * (3 + 2)  # every GT once per group
    offsets = (0, 3)
    for layer, img, g in itertools.product(range(2), range(2), range(K)):
        keep = ((match.layer == layer) & (match.image == img) &
                (match.query // N == g))
        got = sorted(zip((match.query[keep] - g * N).tolist(),
                         (match.gt[keep] - offsets[img]).tolist()))
        rows = slice(g * N, (g + 1) * N)
        cost = sum(matcher.cost_terms(logits[layer, img, rows],
                                      boxes[layer, img, rows], labels[img],
                                      gts[img]).values())  # (N, num_gts)
        num_gts = cost.shape[1]
        best = min(itertools.permutations(range(N), num_gts),
                   key=lambda perm: sum(cost[q, j] for j, q in
                                        enumerate(perm)).item())
        assert got == sorted((q, j) for j, q in enumerate(best))


def test_non_finite_cost_names_the_group():
    logits, boxes, labels, gts = random_match_inputs()
    boxes[1, 0, 2 * N + 1] = float('nan')
    with pytest.raises(ValueError, match=r'layer 1 \(query group 2\)'):
        CdetrHungarianMatcher().match(logits, boxes, labels, gts,
                                      num_groups=K)


def build_head(num_groups):
    head = MODELS.build(dict(
        type='CdetrHead', num_classes=3, embed_dims=D, num_groups=num_groups,
        train_cfg=dict(assigner=dict(type='CdetrHungarianMatcher'))))
    head.init_weights()
    return head.train()


def test_normaliser_is_k_times_the_box_count(monkeypatch):
    """K identical groups: K identical matches over a K-fold normaliser."""
    import cdetr_mmdet.models.head as head_module
    _, samples = make_batch(num_gts=(3, 2))
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 2, N, D, generator=gen)
    refs = torch.rand(2, N, 2, generator=gen)
    single, grouped = build_head(1), build_head(K)
    grouped.load_state_dict(single.state_dict())
    normalisers = []
    reduce_mean = head_module.reduce_mean
    monkeypatch.setattr(head_module, 'reduce_mean',
                        lambda x: normalisers.append(x.item()) or
                        reduce_mean(x))
    expected = single.loss(hidden, refs, samples)
    got = grouped.loss(hidden.repeat(1, 1, K, 1), refs.repeat(1, K, 1),
                       samples)
    grouped.eval()  # eval: one group, the plain normaliser
    grouped.loss(hidden, refs, samples)
    assert normalisers == [5., K * 5., 5.]
    assert got.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key])


def test_gradients_reach_every_group_of_query_rows(tiny_model_cfg):
    model = group_model(tiny_model_cfg, dropout=0.1).train()
    inputs, samples = make_batch()
    losses = model.loss(inputs, samples)
    sum(losses.values()).backward()
    grad = model.query_embedding.weight.grad  # (K * N, d)
    assert grad.shape[0] == K * model.num_queries
    assert (grad.abs().sum(1) > 0).all()
    unused = [n for n, p in model.named_parameters()
              if p.requires_grad and p.grad is None]
    assert unused == []  # DDP keeps find_unused_parameters=False


def test_k1_builds_and_trains_as_without_the_option(tiny_model_cfg):
    torch.manual_seed(0)
    plain = MODELS.build(tiny_model_cfg)
    torch.manual_seed(0)
    explicit = group_model(tiny_model_cfg, group_detr=1, dropout=0.1)
    explicit.load_state_dict(plain.state_dict())
    assert explicit.decoder.num_groups == explicit.bbox_head.num_groups == 1
    assert {k: v.shape for k, v in plain.state_dict().items()} == {
        k: v.shape for k, v in explicit.state_dict().items()}
    inputs, samples = make_batch()
    losses = []
    for model in (plain, explicit):
        torch.manual_seed(1)  # the same dropout masks
        losses.append(model.train().loss(inputs, samples))
    for key in losses[0]:
        assert torch.equal(losses[0][key], losses[1][key]), key


def test_learned_reference_points_per_query_row(tiny_model_cfg):
    cfg = tiny_model_cfg.copy()
    cfg.decoder.reference = 'learned'
    model = group_model(cfg)
    n = model.num_queries
    assert model.decoder.ref_point_embed.weight.shape == (K * n, 2)
    query_pos = model.query_embedding.weight[None]
    assert model.decoder.train().reference_source(query_pos).shape[1] == K * n
    refs = model.decoder.eval().reference_source(query_pos[:, :n])
    torch.testing.assert_close(
        refs[0], model.decoder.ref_point_embed.weight[:n].sigmoid())


@pytest.mark.parametrize('bad', [0, 2.0, -1])
def test_bad_group_counts_are_refused(tiny_model_cfg, bad):
    cfg = tiny_model_cfg.copy()
    cfg.group_detr = bad
    with pytest.raises(ValueError, match='group_detr must be an int >= 1'):
        MODELS.build(cfg)


def test_component_group_counts_come_from_group_detr_only(tiny_model_cfg):
    cfg = tiny_model_cfg.copy()
    cfg.bbox_head.num_groups = K
    with pytest.raises(KeyError, match='set model.group_detr'):
        MODELS.build(cfg)


def test_bf16_autocast_training_step_with_groups(tiny_model_cfg):
    model = group_model(tiny_model_cfg, dropout=0.1).train()
    inputs, samples = make_batch()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        losses = model.loss(inputs, samples)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert (model.query_embedding.weight.grad.abs().sum(1) > 0).all()


def test_core_object_queries_k_groups_in_training_first_group_in_eval(
        tiny_model_cfg):
    """The core (ConditionalDETRTransformer) owns the K * N rows and picks
    the current mode's: all in training, group 0 in eval (K = 1: all)."""
    model = group_model(tiny_model_cfg)
    core, n = model.transformer, model.num_queries
    assert core.num_groups == K
    assert core.query_embedding is model.query_embedding
    weight = model.query_embedding.weight
    _, query_pos = core.object_queries(2)  # model in training mode
    assert query_pos.shape == (2, K * n, weight.shape[1])
    assert torch.equal(query_pos[1], weight)
    model.eval()
    query, query_pos = core.object_queries(2)
    assert query_pos.shape == (2, n, weight.shape[1])
    assert torch.equal(query_pos[0], weight[:n])
    assert torch.equal(query, torch.zeros_like(query_pos))
