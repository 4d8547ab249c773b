"""The decoder's ablation switches (paper section 4.3, Table 3, Figure 5)."""
import copy

import pytest
import torch
from mmdet.models.layers.transformer import inverse_sigmoid
from mmdet.registry import MODELS

from cdetr_mmdet.models.decoder import REFERENCES, SPATIAL_QUERIES, TRANSFORMS
from conftest import make_batch

D, HEADS, NQ = 32, 4, 6
# Every non-default variant the paper trains, as decoder config keys.
VARIANTS = {
    'reference=fixed': dict(reference='fixed'),
    'reference=learned': dict(reference='learned'),
    'csq_c': dict(spatial_query='csq_c'),
    'csq_t': dict(spatial_query='csq_t'),
    'csq_p': dict(spatial_query='csq_p'),
    'csq_i': dict(spatial_query='csq_i'),
    'T=identity': dict(transform='identity'),
    'T=scalar': dict(transform='scalar'),
    'T=block': dict(transform='block'),
    'T=full': dict(transform='full'),
}


def build_decoder(seed=0, layers=2, **switches):
    torch.manual_seed(seed)
    if switches.get('reference') == 'learned':
        switches.setdefault('num_queries', NQ)
    return MODELS.build(dict(
        type='CdetrTransformerDecoder', num_layers=layers,
        layer_cfg=dict(embed_dims=D, num_heads=HEADS,
                       feedforward_channels=64, dropout=0.),
        **switches)).eval()


def run_decoder(decoder, seed=1):
    """Forward on random inputs; returns outputs and what each cross-attention got."""
    g = torch.Generator().manual_seed(seed)
    query_pos = torch.randn(2, NQ, D, generator=g)
    memory, memory_pos = torch.randn(2, 9, D, generator=g), torch.randn(2, 9, D, generator=g)
    seen = []  # per layer: (c_q, p_q), the cross-attention's query and spatial query
    hooks = [layer.cross_attn.register_forward_pre_hook(
        lambda mod, args: seen.append((args[0], args[4])))
        for layer in decoder.layers]
    inputs = []  # per layer: its input decoder embedding f
    hooks += [layer.self_attn.register_forward_pre_hook(
        lambda mod, args: inputs.append(args[0])) for layer in decoder.layers]
    hidden, refs = decoder(torch.zeros(2, NQ, D), query_pos, memory, memory_pos)
    for h in hooks:
        h.remove()
    return hidden, refs, seen, inputs, query_pos


def test_explicit_defaults_are_todays_decoder():
    implicit = build_decoder()
    explicit = build_decoder(reference='predicted', spatial_query='csq',
                             transform='diagonal')
    assert ([(n, p.shape) for n, p in implicit.named_parameters()] ==
            [(n, p.shape) for n, p in explicit.named_parameters()])
    assert {n.split('.')[0] for n, _ in implicit.named_parameters()} == {
        'layers', 'query_scale', 'ref_point_head', 'norm'}
    for a, b in zip(run_decoder(implicit)[:2], run_decoder(explicit)[:2]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize('key,allowed', [
    ('reference', REFERENCES), ('spatial_query', SPATIAL_QUERIES),
    ('transform', TRANSFORMS)])
def test_bad_value_lists_the_allowed_values(key, allowed):
    with pytest.raises(ValueError) as err:
        build_decoder(**{key: 'nope'})
    message = str(err.value)
    assert f"{key}='nope' is not supported" in message
    assert 'allowed values: ' + ', '.join(repr(a) for a in allowed) in message


def test_inconsistent_switches_are_refused():
    with pytest.raises(ValueError, match="transform='block' needs spatial_query='csq'"):
        build_decoder(spatial_query='csq_c', transform='block')
    with pytest.raises(ValueError, match="num_queries is required by"):
        MODELS.build(dict(type='CdetrTransformerDecoder', num_layers=1,
                          layer_cfg=dict(embed_dims=D, num_heads=HEADS),
                          reference='learned'))


@pytest.fixture(scope='module')
def small_model_cfg():
    from mmengine.config import Config

    from conftest import ROOT, shrink_model_cfg
    cfg = Config.fromfile(str(ROOT / 'configs' / 'conditional_detr_r50_50e.py'))
    model = shrink_model_cfg(cfg.model, embed_dims=D)
    model.backbone.base_channels = 16  # R18 ending with 128 channels
    model.neck.in_channels = [128]
    for part in ('encoder', 'decoder'):
        model[part].layer_cfg.num_heads = HEADS
    return model


@pytest.mark.parametrize('name', list(VARIANTS))
def test_variant_trains_and_uses_every_parameter(small_model_cfg, name):
    """Forward + backward, finite losses, a gradient for every parameter (DDP)."""
    cfg = copy.deepcopy(small_model_cfg)
    cfg.decoder.update(VARIANTS[name])
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    model.init_weights()
    inputs, samples = make_batch(num_gts=(2, 1))
    losses = model.loss(inputs, samples)
    total = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total)
    total.backward()
    missing = [n for n, p in model.named_parameters()
               if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())]
    assert missing == []
    names = {n for n, _ in model.decoder.named_parameters()}
    assert any(n.startswith('ref_point_head.') for n in names) == (
        VARIANTS[name].get('reference', 'predicted') == 'predicted')
    assert any(n.startswith('ref_point_embed.') for n in names) == (
        VARIANTS[name].get('reference') == 'learned')
    assert any(n.startswith('query_scale.') for n in names) == (
        name in ('csq_t', 'csq_i', 'T=scalar', 'T=block', 'T=full',
                 'reference=fixed', 'reference=learned'))


def test_fixed_reference_is_detrs_center_for_every_query():
    hidden, refs, seen, _, _ = run_decoder(build_decoder(reference='fixed'))
    assert torch.equal(refs, torch.full_like(refs, 0.5))
    # The head's box offset inverse_sigmoid(s) vanishes: DETR's box.
    assert torch.equal(inverse_sigmoid(refs), torch.zeros_like(refs))
    p_s = seen[0][1]
    assert torch.equal(p_s, p_s[:1, :1].expand_as(p_s))  # one p_s for all queries


def test_learned_reference_is_a_free_point_per_query():
    decoder = build_decoder(reference='learned')
    _, refs, _, _, _ = run_decoder(decoder, seed=1)
    _, refs2, _, _, _ = run_decoder(decoder, seed=2)  # other object queries
    torch.testing.assert_close(refs, refs2, rtol=0, atol=0)
    torch.testing.assert_close(refs[0], decoder.ref_point_embed.weight.sigmoid())
    assert refs[0].unique(dim=0).shape[0] == NQ  # one point per query
    with pytest.raises(ValueError, match='built for 6'):
        decoder(torch.zeros(1, 3, D), torch.randn(1, 3, D), torch.randn(1, 4, D),
                torch.randn(1, 4, D))


def test_spatial_query_forms():
    """What each Table 3 form hands the cross-attention as p_q."""
    base = build_decoder()
    _, refs, seen, f, _ = run_decoder(base)
    p_s = base.ref_sine_embed(refs)
    torch.testing.assert_close(seen[1][1], p_s * base.query_scale(f[1]))

    dec = build_decoder(spatial_query='csq_c')
    _, _, seen, f, _ = run_decoder(dec)
    assert torch.equal(seen[0][1], torch.zeros_like(seen[0][1]))  # f = 0 in layer 1
    assert torch.equal(seen[1][1], f[1]) and f[1].abs().sum() > 0

    dec = build_decoder(spatial_query='csq_t')
    _, _, seen, f, _ = run_decoder(dec)
    assert torch.equal(seen[0][1], torch.ones_like(seen[0][1]))  # T = 1 in layer 1
    torch.testing.assert_close(seen[1][1], dec.query_scale(f[1]))

    dec = build_decoder(spatial_query='csq_i')
    _, refs, seen, f, _ = run_decoder(dec)
    p_s = dec.ref_sine_embed(refs)
    c_q = seen[1][0]  # the self-attention output the cross-attention reads
    torch.testing.assert_close(seen[1][1], p_s * dec.query_scale(c_q))
    assert not torch.allclose(seen[1][1], p_s * dec.query_scale(f[1]))


def test_csq_p_is_the_identity_transform():
    csq_p, identity = build_decoder(spatial_query='csq_p'), build_decoder(transform='identity')
    assert ([n for n, _ in csq_p.named_parameters()] ==
            [n for n, _ in identity.named_parameters()])
    assert not hasattr(identity, 'query_scale')
    out_p, out_i = run_decoder(csq_p), run_decoder(identity)
    torch.testing.assert_close(out_p[0], out_i[0], rtol=0, atol=0)
    p_s = identity.ref_sine_embed(out_i[1])
    for _, p_q in out_i[2]:  # T == 1 in every layer
        assert torch.equal(p_q, p_s)


def transform_matrix(decoder, source):
    """T of one query as a dense d x d matrix: the Jacobian of p_q w.r.t. p_s."""
    embed = torch.randn(1, 1, D)
    return torch.autograd.functional.jacobian(
        lambda e: decoder.apply_transform(e, source[:1, :1])[0, 0], embed)[:, 0, 0]


@pytest.mark.parametrize('form', ['diagonal', 'scalar', 'block', 'full'])
def test_transform_forms_have_their_structure(form):
    decoder = build_decoder(transform=form)
    _, refs, seen, f, _ = run_decoder(decoder)
    p_s = decoder.ref_sine_embed(refs)
    # The layers receive T(f) p_s ...
    torch.testing.assert_close(seen[1][1], decoder.apply_transform(p_s, f[1]))
    # ... with T of the form's structure (per query).
    t = transform_matrix(decoder, f[1])
    eye = torch.eye(D, dtype=torch.bool)
    dh = D // HEADS
    in_block = torch.block_diag(*[torch.ones(dh, dh)] * HEADS).bool()
    if form == 'diagonal':
        assert torch.all(t[~eye] == 0) and t.diagonal().unique().numel() == D
    elif form == 'scalar':  # constant across channels
        assert torch.all(t[~eye] == 0) and t.diagonal().unique().numel() == 1
    elif form == 'block':
        assert torch.all(t[~in_block] == 0) and torch.all(t[in_block] != 0)
    else:
        assert torch.all(t != 0)
    assert decoder.query_scale.layers[-1].out_features == dict(
        diagonal=D, scalar=1, block=HEADS * dh * dh, full=D * D)[form]
