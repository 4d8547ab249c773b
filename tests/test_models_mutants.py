"""Tests written to kill the mutants that survived the fast model tests.

Each test names the mutant(s) of ``mutmut`` it kills (docs/testing.md,
"Mutation testing"); each checks a behaviour the model promises, on full
tensors, against an independent reference where there is one.
"""
import pytest
import torch
from mmdet.registry import MODELS, TASK_UTILS

from test_head import build_head, sample


def official_costs(logits, boxes, gt_labels, gt_boxes, cost_class=2.,
                   cost_bbox=5., cost_giou=2., alpha=0.25, gamma=2.):
    """Atten4Vis/ConditionalDETR models/matcher.py's cost terms, written
    out (its ``generalized_box_iou`` inlined)."""
    out_prob = logits.sigmoid()
    neg = (1 - alpha) * (out_prob**gamma) * (-(1 - out_prob + 1e-8).log())
    pos = alpha * ((1 - out_prob)**gamma) * (-(out_prob + 1e-8).log())
    cls = pos[:, gt_labels] - neg[:, gt_labels]

    def xyxy(b):
        cx, cy, w, h = b.unbind(-1)
        return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2],
                           -1)

    a, b = xyxy(boxes), xyxy(gt_boxes)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = torch.max(a[:, None, :2], b[:, :2])
    rb = torch.min(a[:, None, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = area_a[:, None] + area_b - inter
    iou = inter / union
    lt = torch.min(a[:, None, :2], b[:, :2])
    rb = torch.max(a[:, None, 2:], b[:, 2:])
    hull = (rb - lt).clamp(min=0).prod(-1)
    giou = iou - (hull - union) / hull
    return dict(cls=cost_class * cls,
                bbox=cost_bbox * torch.cdist(boxes, gt_boxes, p=1),
                giou=-cost_giou * giou)


def random_preds(num_preds=12, num_classes=5, num_gts=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(num_preds, num_classes, generator=g) * 4
    # Saturated scores too: 1 - p and p at float32's ends (p == 1 exactly
    # for logit 20), where the +1e-8 inside the logs decides the value.
    logits[0, :] = 20.
    logits[1, :] = -20.
    logits[2, :] = 0.
    boxes = torch.rand(num_preds, 4, generator=g) * 0.5 + 0.2
    gt_boxes = torch.rand(num_gts, 4, generator=g) * 0.5 + 0.2
    gt_labels = torch.randint(num_classes, (num_gts, ), generator=g)
    gt_labels[0] = gt_labels[1]  # two GTs of one class
    return logits, boxes, gt_labels, gt_boxes


@pytest.mark.parametrize('kwargs', [
    {}, dict(cost_class=1.5, cost_bbox=3., cost_giou=0.5, alpha=0.4,
             gamma=1.5)], ids=['defaults', 'custom'])
def test_cost_terms_equal_the_official_formula(kwargs):
    """Kills matcher ``cost_terms`` mutants 3-15 (the focal negative term's
    operators and its 1e-8) and the constructor defaults: the defaults are
    the official recipe (class 2, L1 5, GIoU 2, alpha 0.25, gamma 2)."""
    matcher = TASK_UTILS.build(dict(type='CdetrHungarianMatcher', **kwargs))
    logits, boxes, gt_labels, gt_boxes = random_preds()
    terms = matcher.cost_terms(logits, boxes, gt_labels, gt_boxes)
    expected = official_costs(logits, boxes, gt_labels, gt_boxes, **kwargs)
    assert terms.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(terms[name], expected[name])
    # The saturated rows are finite (the 1e-8 guards the logs).
    assert all(torch.isfinite(t).all() for t in terms.values())


def test_non_finite_cost_without_image_names_names_the_batch_index():
    """Kills matcher ``_raise_non_finite`` mutant 11 (``img_names`` used
    when None)."""
    matcher = TASK_UTILS.build(dict(type='CdetrHungarianMatcher'))
    logits = torch.randn(1, 2, 5, 3)
    logits[0, 1, 2, 0] = float('nan')
    boxes = torch.rand(1, 2, 5, 4) * 0.5 + 0.2
    gt_labels = [torch.tensor([0]), torch.tensor([0, 1])]
    gt_boxes = [torch.rand(1, 4) * 0.5 + 0.2, torch.rand(2, 4) * 0.5 + 0.2]
    with pytest.raises(ValueError, match=r'for image batch index 1 in '
                       r"decoder layer 0: cost term\(s\) \['cls'\]"):
        matcher.match(logits, boxes, gt_labels, gt_boxes)


def test_topk_detections_batched_equal_per_image():
    """Kills head ``topk_detections`` mutant 36 (``expand(+1, ...)``, only
    right for one image): a batch of two equals its images one by one."""
    head = build_head(num_classes=3, max_per_img=7)
    logits, boxes = torch.randn(2, 5, 3), torch.rand(2, 5, 4)
    batched = head.topk_detections(logits, boxes)
    for i in range(2):
        single = head.topk_detections(logits[i:i + 1], boxes[i:i + 1])
        for b, s in zip(batched, single):
            torch.testing.assert_close(b[i:i + 1], s)


def test_score_threshold_is_strict():
    """Kills head ``predict_by_feat`` mutant 23 (``>=``): a score equal to
    ``score_thr`` is dropped, as in mmdet's ``filter_scores_and_topk``."""
    head = build_head(num_classes=2, score_thr=0.5)
    logits = torch.full((1, 3, 2), -10.)
    logits[0, 0, 0] = 0.  # sigmoid(0) == 0.5 exactly: on the threshold
    logits[0, 1, 1] = 0.1  # just above: kept
    out = head.predict_by_feat(logits, torch.rand(1, 3, 4),
                               [dict(img_shape=(10, 10),
                                     scale_factor=(1., 1.))])[0]
    assert out.labels.tolist() == [1]
    assert out.scores.tolist() == [pytest.approx(torch.sigmoid(
        torch.tensor(0.1)).item())]


def test_head_predict_rescales_by_default():
    """Kills head ``predict`` mutant 1 (``rescale=False`` by default): boxes
    come back in the original image, divided by ``scale_factor``."""
    head = build_head(num_classes=3)
    hidden, refs = torch.randn(2, 1, 4, 32), torch.rand(1, 4, 2)
    samples = [sample(40, 60, scale=(2., 4.))]
    default = head.predict(hidden, refs, samples)[0]
    raw = head.predict(hidden, refs, samples, rescale=False)[0]
    torch.testing.assert_close(default.bboxes,
                               raw.bboxes / torch.tensor([2., 4., 2., 4.]))
    assert not torch.equal(default.bboxes, raw.bboxes)


def test_non_finite_cost_names_the_group_from_two_groups_on():
    """Kills matcher ``_raise_non_finite`` mutant 18 (``shape[2] > 2``): with
    K = 2 query groups the message names the group; with one it does not."""
    matcher = TASK_UTILS.build(dict(type='CdetrHungarianMatcher'))
    logits = torch.randn(1, 1, 6, 3)
    logits[0, 0, 4, 1] = float('nan')  # query 4: group 1 of 2 (3 each)
    boxes = torch.rand(1, 1, 6, 4) * 0.5 + 0.2
    gt_labels, gt_boxes = [torch.tensor([1])], [torch.rand(1, 4) * .5 + .2]
    with pytest.raises(ValueError, match=r'for image a\.jpg in decoder layer '
                       r"0 \(query group 1\): cost term\(s\) \['cls'\]"):
        matcher.match(logits, boxes, gt_labels, gt_boxes, ['a.jpg'],
                      num_groups=2)
    with pytest.raises(ValueError, match=r"decoder layer 0: cost term"):
        matcher.match(logits, boxes, gt_labels, gt_boxes, ['a.jpg'])


def test_loss_names_images_by_batch_index_without_img_path():
    """Kills head ``loss_by_feat`` mutant 38 (no ``str(i)`` default): an
    image without ``img_path`` is named by its batch index in the matcher's
    error, not ``None``."""
    head = build_head(num_classes=3)
    logits = torch.randn(1, 2, 4, 3)
    logits[0, 1, 0, 2] = float('nan')  # image 1's GT class
    samples = [sample(40, 60, [[1., 2., 30., 20.]], [0]),
               sample(40, 60, [[5., 5., 20., 30.]], [2])]
    for s in samples:
        del s.img_path
    with pytest.raises(ValueError, match='for image 1 in decoder layer 0'):
        head.loss_by_feat(logits, torch.rand(1, 2, 4, 4) * .5 + .2, samples)


def test_core_modules_default_to_the_official_sizes():
    """Built with no arguments, every layer is the official one (d_model 256,
    8 heads, FFN 2048, dropout 0.1, 6 + 6 layers: Atten4Vis/ConditionalDETR
    main.py's defaults). Kills the default-argument mutants of attention.py,
    decoder.py and transformer.py (``embed_dims=257``, ``attn_drop=1.1``,
    ``feedforward_channels=2049``, ``dropout=1.1``, ``num_layers=7``)."""
    from cdetr_mmdet.models.attention import (ConditionalCrossAttention,
                                              ConditionalSelfAttention)
    from cdetr_mmdet.models.decoder import (ConditionalDecoderLayer,
                                            CdetrTransformerDecoder)
    from cdetr_mmdet.models.transformer import (CdetrTransformerEncoder,
                                                EncoderLayer)

    def check_attention(attn):
        assert attn.num_heads == 8 and attn.attn_drop == 0.1
        assert all(m.weight.shape == (256, 256) for m in attn.modules()
                   if isinstance(m, torch.nn.Linear))

    check_attention(ConditionalSelfAttention())
    check_attention(ConditionalCrossAttention())
    for layer in (ConditionalDecoderLayer(), EncoderLayer()):
        assert layer.linear1.weight.shape == (2048, 256)
        assert layer.linear2.weight.shape == (256, 2048)
        assert {m.p for name, m in layer.named_children()
                if name.startswith('dropout')} == {0.1}
    decoder_layer, encoder_layer = ConditionalDecoderLayer(), EncoderLayer()
    check_attention(decoder_layer.self_attn)
    check_attention(decoder_layer.cross_attn)
    assert encoder_layer.self_attn.num_heads == 8
    assert encoder_layer.self_attn.dropout == 0.1
    assert encoder_layer.self_attn.in_proj_weight.shape == (768, 256)
    assert len(CdetrTransformerEncoder().layers) == 6
    decoder = CdetrTransformerDecoder()
    assert len(decoder.layers) == 6 and decoder.embed_dims == 256
    assert [layer.is_first for layer in decoder.layers] == [True] + [False] * 5


@pytest.mark.parametrize('name', ['CdetrTransformerEncoder',
                                  'CdetrTransformerDecoder'])
def test_encoder_and_decoder_apply_their_init_cfg(name):
    """``init_cfg`` reaches mmengine's ``BaseModule`` (mutants:
    ``init_cfg=None`` in either)."""
    module = MODELS.build(dict(
        type=name, num_layers=1,
        layer_cfg=dict(embed_dims=16, num_heads=2, feedforward_channels=32),
        init_cfg=dict(type='Constant', layer='Linear', val=0.5, bias=0.)))
    module.init_weights()
    linear1 = module.layers[0].linear1
    assert torch.equal(linear1.weight, torch.full_like(linear1.weight, 0.5))
    assert torch.equal(linear1.bias, torch.zeros_like(linear1.bias))


def test_head_defaults_to_top_100_and_refuses_zero_groups():
    """The paper's top-100 output without a ``max_per_img`` (mutant: 101),
    and ``num_groups=0`` refused by the head itself (mutant: ``or`` ->
    ``and``)."""
    assert build_head().max_per_img == 100
    with pytest.raises(ValueError, match=r'^CdetrHead: num_groups must be an '
                       r'int >= 1, got 0'):
        MODELS.build(dict(type='CdetrHead', num_classes=3, embed_dims=32,
                          num_groups=0))


@pytest.mark.parametrize('part', ['decoder', 'bbox_head'])
def test_detector_refuses_num_groups_set_by_hand(tiny_model_cfg, part):
    """Only ``model.group_detr`` sets K (mutant: the decoder's key not
    checked)."""
    cfg = tiny_model_cfg.copy()
    cfg[part] = dict(cfg[part], num_groups=2)
    with pytest.raises(KeyError, match=f'model.{part}.num_groups must not be '
                       'set: set model.group_detr, which fills it in'):
        MODELS.build(cfg)


@pytest.mark.parametrize('key', ['strides', 'dilations'])
def test_dc5_resnet_refuses_its_own_keys(key):
    """``CdetrDC5ResNet`` sets both itself (mutants: ``'dilations'``
    misspelt, so a user's dilations would be passed twice)."""
    with pytest.raises(KeyError, match=f'CdetrDC5ResNet sets {key} itself; '
                       f'remove "{key}" from the backbone config'):
        MODELS.build(dict(type='CdetrDC5ResNet', depth=18,
                          **{key: (1, 1, 1, 1)}))


def test_frozen_batch_norm_uses_its_own_eps():
    """The frozen path normalises with the module's ``eps`` (mutant: the
    momentum argument dropped, so ``eps`` fell back to 1e-5), against the
    formula on full tensors."""
    from cdetr_mmdet.models.frozen_bn import CdetrFrozenBatchNorm2d
    torch.manual_seed(0)
    bn = CdetrFrozenBatchNorm2d(3, eps=0.5).eval()
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.1, 2)
    bn.weight.data.uniform_(0.5, 1.5)
    bn.bias.data.uniform_(-1, 1)
    bn.requires_grad_(False)
    x = torch.randn(2, 3, 4, 5, requires_grad=True)  # the frozen path
    ref = ((x - bn.running_mean.view(1, -1, 1, 1))
           / torch.sqrt(bn.running_var.view(1, -1, 1, 1) + 0.5)
           * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1))
    torch.testing.assert_close(bn(x), ref, rtol=1e-6, atol=1e-6)


def test_decoder_refuses_zero_groups_and_names_a_bad_split():
    """``num_groups=0`` is refused by the decoder itself (mutant: ``or`` ->
    ``and``), and queries that do not split into K groups are counted in the
    message (mutant: ``shape[2]``, the width, instead of ``shape[1]``)."""
    from cdetr_mmdet.models.decoder import CdetrTransformerDecoder
    with pytest.raises(ValueError, match=r'^CdetrTransformerDecoder: '
                       r'num_groups must be an int >= 1, got 0$'):
        CdetrTransformerDecoder(num_groups=0)
    decoder = CdetrTransformerDecoder(
        num_layers=1, num_groups=3,
        layer_cfg=dict(embed_dims=16, num_heads=2, feedforward_channels=32))
    query = torch.zeros(1, 7, 16)
    memory = torch.zeros(1, 4, 16)
    with pytest.raises(ValueError, match=r'^7 object queries do not split '
                       r'into 3 groups \(decoder.num_groups\)$'):
        decoder(query, query, memory, memory)


def test_positional_encoding_width_error_names_half_the_width():
    """The exact message (mutants: the text replaced, ``//`` -> ``/``)."""
    from mmdet.models.layers import SinePositionalEncoding
    from test_transformer import build_core
    core = build_core(d=32)
    with pytest.raises(ValueError, match=r'^positional_encoding.num_feats '
                       r'must be embed_dims / 2 = 16, got 8$'):
        type(core)(core.encoder, core.decoder,
                   SinePositionalEncoding(num_feats=8), 5)


# --- Survivors of the full run of models/ (docs/testing.md, "the full run") ---

SMALL = dict(embed_dims=16, num_heads=2, feedforward_channels=32)


@pytest.mark.parametrize('kind', ['self', 'cross'])
def test_each_attention_drops_its_own_weights_in_training(kind):
    """Each attention drops its weights itself (mutants: its dropout rate not
    passed on); the layer-level tests see both attentions at once."""
    from cdetr_mmdet.models.attention import (ConditionalCrossAttention,
                                              ConditionalSelfAttention)
    torch.manual_seed(0)
    d, heads = 32, 4
    x, pos = torch.randn(2, 6, d), torch.randn(2, 6, d)
    mem, mem_pos = torch.randn(2, 9, d), torch.randn(2, 9, d)
    if kind == 'self':
        module, args = ConditionalSelfAttention(d, heads, attn_drop=0.5), (x, pos)
    else:
        module = ConditionalCrossAttention(d, heads, attn_drop=0.5, is_first=True)
        args = (x, mem, pos, mem_pos, pos)
    expected = module.eval()(*args)
    a, b = module.train()(*args), module(*args)
    assert not torch.equal(a, expected) and not torch.equal(a, b)


def test_direct_constructor_defaults():
    """Defaults a config never overrides (mutants of the default arguments)."""
    from cdetr_mmdet.models.attention import (ConditionalCrossAttention,
                                              ConditionalSelfAttention)
    from cdetr_mmdet.models.decoder import (CdetrConditionalSpatialQuery,
                                            ConditionalDecoderLayer)
    assert torch.count_nonzero(ConditionalSelfAttention(16, 2).out_proj.bias) == 0
    cross = ConditionalCrossAttention(16, 2)
    assert cross.is_first is False and not hasattr(cross, 'qpos_proj')
    layer = ConditionalDecoderLayer(16, 2, 32)
    assert layer.is_first is False and not hasattr(layer.cross_attn, 'qpos_proj')
    sq = CdetrConditionalSpatialQuery(16, transform='CdetrBlockTransform')
    assert sq.query_scale.num_heads == 8
    assert sq.query_scale.layers[-1].out_features == 8 * 2 * 2  # M (d / M)^2
    head = MODELS.build(dict(type='CdetrHead', num_classes=3))
    assert head.num_classes == 3 and head.fc_cls.in_features == 256


def test_decoder_error_messages_are_exact():
    """Whole messages (mutants: texts replaced or recased)."""
    from cdetr_mmdet.models.decoder import CdetrTransformerDecoder

    def raised(exc, **kwargs):
        with pytest.raises(exc) as info:
            CdetrTransformerDecoder(**kwargs)
        return info.value.args[0]

    assert raised(ValueError, reference='bogus') == (
        "CdetrTransformerDecoder: reference='bogus' is not supported; allowed "
        "values: 'predicted', 'learned', 'fixed' (default 'predicted')")
    assert raised(ValueError, reference='learned') == (
        "CdetrTransformerDecoder: num_queries is required by, and only allowed "
        "with, reference='learned' (got reference='learned', num_queries=None)")
    assert raised(ValueError, spatial_query=dict(
        type='CdetrConditionalSpatialQuery'), transform='scalar') == (
        'CdetrTransformerDecoder: transform is an alias for string '
        'spatial_query values; put T in the spatial_query config instead')
    assert raised(KeyError, layer_cfg=dict(SMALL, is_first=True)) == (
        'decoder.layer_cfg must not set "is_first": the decoder sets it for '
        'its first layer')
    assert raised(ValueError, num_layers=1, layer_cfg=SMALL, num_groups=2,
                  reference=dict(type='CdetrLearnedReference', num_queries=3,
                                 num_groups=3)) == (
        'CdetrTransformerDecoder: the learned reference has num_groups=3, the '
        'decoder 2; set model.group_detr only')


def test_self_attn_block_default_and_two_groups():
    """One group by default; K = 2 equals the two halves attended alone
    (mutants: the default and the K > 1 branch)."""
    from cdetr_mmdet.models.decoder import ConditionalDecoderLayer
    torch.manual_seed(0)
    layer = ConditionalDecoderLayer(16, 2, 32, dropout=0.).eval()
    q, qp = torch.randn(1, 4, 16), torch.randn(1, 4, 16)
    whole = layer.self_attn_block(q, qp, 1)
    assert torch.equal(layer.self_attn_block(q, qp), whole)
    grouped = layer.self_attn_block(q, qp, 2)
    halves = torch.cat([layer.self_attn_block(q[:, :2], qp[:, :2], 1),
                        layer.self_attn_block(q[:, 2:], qp[:, 2:], 1)], 1)
    torch.testing.assert_close(grouped, halves)
    assert not torch.allclose(grouped, whole)


def test_layers_equal_the_post_norm_formula():
    """Decoder and encoder layers against their formulas written out
    (mutants: residuals and norms)."""
    import torch.nn.functional as F
    from cdetr_mmdet.models.decoder import ConditionalDecoderLayer
    from cdetr_mmdet.models.transformer import EncoderLayer
    torch.manual_seed(0)
    d = 16
    x, pos = torch.randn(2, 5, d), torch.randn(2, 5, d)
    mem, mem_pos = torch.randn(2, 7, d), torch.randn(2, 7, d)
    rse = torch.randn(2, 5, d)
    layer = ConditionalDecoderLayer(d, 2, 32, dropout=0., is_first=True).eval()
    with torch.no_grad():
        c = layer.norm1(x + layer.self_attn(x, pos))
        y = layer.norm2(c + layer.cross_attn(c, mem, pos, mem_pos, rse, None))
        ref = layer.norm3(y + layer.linear2(F.relu(layer.linear1(y))))
        torch.testing.assert_close(layer(x, mem, pos, mem_pos, rse), ref)
        enc = EncoderLayer(d, 2, 32, dropout=0.).eval()
        qk = x + pos
        a = enc.norm1(x + enc.self_attn(qk, qk, x, need_weights=False)[0])
        ref = enc.norm2(a + enc.linear2(F.relu(enc.linear1(a))))
        torch.testing.assert_close(enc(x, pos), ref)


def test_self_attention_helper_is_mha_in_eval():
    """The CPU dropout path's projections equal ``nn.MultiheadAttention``
    with dropout off (mutants: its eval-mode rate)."""
    from cdetr_mmdet.models.transformer import _self_attention
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(16, 2, dropout=0.5,
                                      batch_first=True).eval()
    torch.nn.init.normal_(mha.in_proj_bias)
    qk, v = torch.randn(2, 5, 16), torch.randn(2, 5, 16)
    with torch.no_grad():
        torch.testing.assert_close(_self_attention(mha, qk, v, None),
                                   mha(qk, qk, v, need_weights=False)[0])


def test_learned_reference_eval_takes_group_0():
    from cdetr_mmdet.models.variants.reference_points import \
        CdetrLearnedReference
    ref = CdetrLearnedReference(8, num_queries=2, num_groups=3).eval()
    out = ref(torch.zeros(1, 2, 8))
    assert out.shape == (1, 2, 2)
    torch.testing.assert_close(out[0],
                               ref.ref_point_embed.weight[:2].sigmoid())


@pytest.mark.parametrize('k', [2, 3])
def test_group_detr_reaches_every_part(tiny_model_cfg, k):
    """K reaches the head, the decoder and the core, for K = 2 too (the
    group tests use K = 3)."""
    cfg = tiny_model_cfg.copy()
    cfg.group_detr = k
    model = MODELS.build(cfg)
    assert (model.bbox_head.num_groups == model.decoder.num_groups
            == model.transformer.num_groups == k)


def test_frozen_backward_keeps_the_gradient_dtype():
    import types
    from cdetr_mmdet.models.frozen_bn import _FrozenAffine
    scale = torch.rand(3) + .5
    grad = torch.randn(2, 3, 4, 5).to(torch.bfloat16)
    out, none = _FrozenAffine.backward(
        types.SimpleNamespace(saved_tensors=(scale,)), grad)
    assert none is None and out.dtype == torch.bfloat16
    assert torch.equal(out, grad * scale.view(1, -1, 1, 1).to(torch.bfloat16))


def test_core_group_checks_and_two_groups():
    """The core's own K check and message, a decoder without ``num_groups``,
    and eval with K = 2 taking group 0."""
    from test_transformer import build_core

    from cdetr_mmdet.models.transformer import ConditionalDETRTransformer
    core = build_core(d=32)
    with pytest.raises(ValueError, match=r'^ConditionalDETRTransformer: '
                       r'num_groups must be an int >= 1, got 0$'):
        ConditionalDETRTransformer(core.encoder, core.decoder,
                                   core.positional_encoding, 5, num_groups=0)

    class PlainDecoder(torch.nn.Module):
        embed_dims = 32

    plain = ConditionalDETRTransformer(core.encoder, PlainDecoder(),
                                       core.positional_encoding, 5)
    assert plain.num_groups == 1
    dec2 = MODELS.build(dict(
        type='CdetrTransformerDecoder', num_layers=1, num_groups=2,
        layer_cfg=dict(embed_dims=32, num_heads=4, feedforward_channels=64)))
    core2 = ConditionalDETRTransformer(core.encoder, dec2,
                                       core.positional_encoding, 5,
                                       num_groups=2).eval()
    _, query_pos = core2.object_queries(2)
    assert query_pos.shape == (2, 5, 32)
    assert torch.equal(query_pos[0], core2.query_embedding.weight[:5])


def test_predict_uses_the_last_of_three_layers():
    head = build_head(num_classes=3)
    torch.nn.init.normal_(head.fc_reg.layers[-1].weight)
    hidden, refs = torch.randn(3, 1, 4, 32), torch.rand(1, 4, 2)
    samples = [sample(40, 60)]
    got = head.predict(hidden, refs, samples, rescale=False)[0]
    logits, boxes = head(hidden[2:], refs)
    want = head.predict_by_feat(logits[0], boxes[0], [samples[0].metainfo],
                                rescale=False)[0]
    assert torch.equal(got.bboxes, want.bboxes)
    assert torch.equal(got.scores, want.scores)
    assert torch.equal(got.labels, want.labels)


def test_head_applies_its_init_cfg():
    """``init_cfg`` reaches mmengine's ``BaseModule`` (the head resets only
    the class bias and the last box layer after it)."""
    head = MODELS.build(dict(
        type='CdetrHead', num_classes=3, embed_dims=8,
        init_cfg=dict(type='Constant', layer='Linear', val=0.5, bias=0.)))
    head.init_weights()
    for weight in (head.fc_reg.layers[0].weight, head.fc_cls.weight):
        assert torch.equal(weight, torch.full_like(weight, 0.5))


def test_encoder_layer_asks_for_no_attention_weights():
    """The fused path (``need_weights=False``), not the averaged weights."""
    from cdetr_mmdet.models.transformer import EncoderLayer
    enc = EncoderLayer(16, 2, 32, dropout=0.).eval()
    seen, forward = [], enc.self_attn.forward
    enc.self_attn.forward = lambda *a, **k: seen.append(k) or forward(*a, **k)
    enc(torch.randn(1, 5, 16), torch.randn(1, 5, 16))
    assert seen and seen[0]['need_weights'] is False


@pytest.mark.parametrize('spatial_query', ['csq', 'csq_i'])
def test_padded_keys_do_not_reach_the_decoder_output(spatial_query):
    """The memory mask reaches every layer's cross-attention on both decoder
    paths (mutants: the mask dropped on the CSQ-I path)."""
    from test_ablation_switches import D, NQ, build_decoder
    dec = build_decoder(spatial_query=spatial_query)
    g = torch.Generator().manual_seed(0)
    q, qp = torch.zeros(2, NQ, D), torch.randn(2, NQ, D, generator=g)
    mem = torch.randn(2, 9, D, generator=g)
    pos = torch.randn(2, 9, D, generator=g)
    mask = torch.zeros(2, 9, dtype=torch.bool)
    mask[1, 6:] = True
    mem2, pos2 = mem.clone(), pos.clone()
    mem2[1, 6:] += 5.
    pos2[1, 6:] -= 3.
    with torch.no_grad():
        a, _ = dec(q, qp, mem, pos, mask)
        b, _ = dec(q, qp, mem2, pos2, mask)
        unmasked, _ = dec(q, qp, mem2, pos2)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, unmasked)


def test_k1_passes_no_num_groups_to_decoder_or_head(tiny_model_cfg):
    """K = 1 leaves the decoder's and head's configs untouched (the K = 1
    model is today's, key for key)."""
    from cdetr_mmdet.models.decoder import CdetrTransformerDecoder
    from cdetr_mmdet.models.head import CdetrHead

    class NoGroupsDecoder(CdetrTransformerDecoder):
        def __init__(self, **kwargs):
            assert 'num_groups' not in kwargs, 'num_groups passed to the decoder'
            super().__init__(**kwargs)

    class NoGroupsHead(CdetrHead):
        def __init__(self, **kwargs):
            assert 'num_groups' not in kwargs, 'num_groups passed to the head'
            super().__init__(**kwargs)

    cfg = tiny_model_cfg.copy()
    cfg.decoder = dict(cfg.decoder, type=NoGroupsDecoder)
    cfg.bbox_head = dict(cfg.bbox_head, type=NoGroupsHead)
    model = MODELS.build(cfg)
    assert model.decoder.num_groups == model.bbox_head.num_groups == 1


def test_detector_attributes_and_learned_reference_queries(tiny_model_cfg):
    model = MODELS.build(tiny_model_cfg)
    assert model.folded_for_inference is False
    assert model.embed_dims == tiny_model_cfg.decoder.layer_cfg.embed_dims
    cfg = tiny_model_cfg.copy()
    cfg.decoder = dict(cfg.decoder, reference=dict(type='CdetrLearnedReference'))
    model = MODELS.build(cfg)  # num_queries filled in from the detector's
    assert model.decoder.ref_point_embed.weight.shape == (
        tiny_model_cfg.num_queries, 2)


def test_loss_names_images_by_img_path():
    """The counterpart of the batch-index test: with ``img_path`` the
    matcher's error names the file (mutants: the key misspelt)."""
    head = build_head(num_classes=3)
    logits = torch.randn(1, 1, 4, 3)
    logits[0, 0, 0, 0] = float('nan')  # the GT class
    with pytest.raises(ValueError, match=r'for image x\.png in decoder layer 0'):
        head.loss_by_feat(logits, torch.rand(1, 1, 4, 4) * .5 + .2,
                          [sample(40, 60, [[1., 2., 30., 20.]], [0])])


def test_frozen_path_needs_both_affine_parameters_frozen():
    """A frozen bias alone is ordinary batch norm (mutant: ``and`` -> ``or``)."""
    from cdetr_mmdet.models.frozen_bn import CdetrFrozenBatchNorm2d
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 5, requires_grad=True)
    bn, ref = CdetrFrozenBatchNorm2d(3), torch.nn.BatchNorm2d(3)
    for module in (bn, ref):
        module.bias.requires_grad_(False)
    torch.testing.assert_close(bn.train()(x), ref.train()(x))
    torch.testing.assert_close(bn.running_mean, ref.running_mean)
    bn.eval()
    bn(x).sum().backward()
    assert bn.weight.grad is not None


def test_detector_without_neck_initialises(tiny_model_cfg):
    """``neck=None`` leaves no ``neck`` attribute; ``init_weights`` copes
    (mutant: ``getattr`` without its default)."""
    cfg = tiny_model_cfg.copy()
    cfg.neck = None
    model = MODELS.build(cfg)
    assert not hasattr(model, 'neck')
    model.init_weights()


def test_load_from_state_dict_forwards_keyword_arguments(tiny_model_cfg):
    model = MODELS.build(tiny_model_cfg)
    missing, unexpected, errors = [], [], []
    model._load_from_state_dict(model.state_dict(), '', {}, strict=True,
                                missing_keys=missing,
                                unexpected_keys=unexpected,
                                error_msgs=errors)
    assert missing == unexpected == errors == []


def test_channels_last_feeds_the_backbone_nhwc(tiny_model_cfg):
    cfg = tiny_model_cfg.copy()
    cfg.channels_last, cfg.frozen_channels_last = True, False
    model = MODELS.build(cfg).eval()
    assert model.channels_last is True
    seen = []
    model.backbone.register_forward_pre_hook(lambda m, a: seen.append(
        a[0].is_contiguous(memory_format=torch.channels_last)))
    with torch.no_grad():
        model.extract_feat(torch.randn(1, 3, 64, 64))
    assert seen == [True]
