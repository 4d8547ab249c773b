"""cdetr_mmdet.analysis: the decomposed cross-attention and tools/vis_attention.py."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from mmdet.registry import MODELS
from mmengine.config import Config
from PIL import Image

from cdetr_mmdet.analysis import analyze_cross_attention
from conftest import ROOT, make_batch, randomize_

CONFIGS = {
    'conditional': 'configs/demo/conditional_detr_r18_shapes.py',
    'detr': 'configs/demo/detr_r18_shapes.py',
    'mmdet_conditional': 'configs/convergence/mmdet_conditional_detr_r18_shapes_d256.py',
}
# Two images of different sizes: the second's keys are partly padding.
SIZES = ((64, 96), (48, 80))


def build(kind: str) -> torch.nn.Module:
    """A randomly initialised model of the config, in eval mode."""
    cfg = Config.fromfile(str(ROOT / CONFIGS[kind]))
    cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model)
    return randomize_(model, seed=1).eval()


@pytest.fixture(scope='module', params=sorted(CONFIGS))
def analysed(request):
    """(kind, model, inputs, samples, maps, per-layer (kwargs, output) of cross_attn)."""
    model = build(request.param)
    inputs, samples = make_batch(SIZES, num_classes=4)
    seen = []
    hooks = [layer.cross_attn.register_forward_hook(
        lambda m, args, kwargs, out: seen.append(out), with_kwargs=True)
        for layer in model.decoder.layers]
    maps = analyze_cross_attention(model, inputs, samples)
    for hook in hooks:
        hook.remove()
    return request.param, model, inputs, samples, maps, seen


def _heads(x, num_heads):
    bs, n, d = x.shape
    return x.view(bs, n, num_heads, d // num_heads).transpose(1, 2)


def test_combined_map_reproduces_layer_output(analysed):
    kind, model, _, _, maps, outputs = analysed
    assert maps.kind == kind
    for i, layer in enumerate(model.decoder.layers):
        module, inputs = layer.cross_attn, maps.layer_inputs[i]
        attn = maps.combined[i].flatten(-2)  # (bs, heads, nq, keys)
        if kind == 'detr':
            mha = module.attn
            w_v = mha.in_proj_weight.split(mha.embed_dim)[2]
            b_v = mha.in_proj_bias.split(mha.embed_dim)[2]
            value = torch.nn.functional.linear(inputs['value'], w_v, b_v)
            out_proj, residual = mha.out_proj, inputs['query']
        else:
            memory = inputs['memory' if kind == 'conditional' else 'key']
            value = module.v_proj(memory)
            out_proj = module.out_proj
            residual = 0 if kind == 'conditional' else inputs['query']
        heads_out = attn @ _heads(value, maps.num_heads)  # (bs, heads, nq, d / heads)
        expected = residual + out_proj(heads_out.transpose(1, 2).flatten(2))
        torch.testing.assert_close(expected, outputs[i], rtol=0, atol=1e-5)


def test_maps_sum_to_one_and_skip_padding(analysed):
    _, _, _, _, maps, _ = analysed
    h, w = maps.feat_size
    pad = maps.key_padding_mask
    assert pad is not None and pad.shape == (2, h, w)
    assert not pad[0].any()  # the larger image fills the batch
    # Stride 16: the 48 x 80 image covers 3 x 5 of the 4 x 6 cells.
    expected = torch.ones(h, w, dtype=torch.bool)
    expected[:3, :5] = False
    assert torch.equal(pad[1], expected)
    for name in ('spatial', 'content', 'combined'):
        attn = getattr(maps, name)  # (L, bs, heads, nq, H, W)
        assert attn.shape == (len(maps.layer_inputs), 2, maps.num_heads,
                              maps.scores.shape[1], h, w)
        assert torch.all(attn[:, 1, ..., pad[1]] == 0), name
        sums = attn.flatten(-2).sum(-1)
        torch.testing.assert_close(sums, torch.ones_like(sums))
        # Not degenerate: the maps are not uniform over the keys.
        assert attn.flatten(-2).std(-1).max() > 1e-3, name


def test_spatial_plus_content_is_combined(analysed):
    _, _, _, _, maps, _ = analysed
    total = maps.spatial_logits + maps.content_logits
    torch.testing.assert_close(total, maps.combined_logits, rtol=1e-5, atol=1e-4)
    # Both parts carry signal: neither is zero.
    assert maps.spatial_logits.abs().max() > 1e-3
    assert maps.content_logits.abs().max() > 1e-3


def test_outputs_boxes_and_references(analysed):
    kind, model, inputs, samples, maps, _ = analysed
    cls, boxes = model(inputs, samples, mode='tensor')
    assert maps.boxes.shape == (2, cls.shape[2], 4)
    h, w = samples[1].metainfo['img_shape']
    assert maps.boxes[1, :, 2].max() <= w + 1e-4  # normalised by img_shape
    assert (maps.references is None) == (kind == 'detr')
    if maps.references is not None:
        assert maps.references.shape == (2, cls.shape[2], 2)


def _hooks(model):
    return [(name, len(m._forward_hooks), len(m._forward_pre_hooks),
             len(m._forward_hooks_with_kwargs), len(m._forward_pre_hooks_with_kwargs))
            for name, m in model.named_modules()]


def test_analysis_leaves_model_unchanged():
    model = build('conditional')
    inputs, samples = make_batch(SIZES, num_classes=4)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    hooks, training = _hooks(model), model.training
    before = model(inputs, samples, mode='tensor')
    assert all(n == 0 for row in hooks for n in row[1:])  # nothing installed by import
    analyze_cross_attention(model, inputs, samples)
    after = model(inputs, samples, mode='tensor')
    assert _hooks(model) == hooks and model.training == training
    for a, b in zip(before, after):
        assert torch.equal(a, b)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


@pytest.mark.parametrize('fault', ['forward', 'skipped_layer', 'registration'])
def test_hooks_are_removed_on_error(fault, monkeypatch):
    """Whatever fails (the forward, a layer that skips its cross-attention, registering the
    second layer's hook), the error reaches the caller and no hook stays on the model."""
    model = build('conditional')
    inputs, samples = make_batch(SIZES, num_classes=4)
    hooks = _hooks(model)
    layers = model.decoder.layers
    if fault == 'forward':
        def broken(*args, **kwargs):
            raise ZeroDivisionError('broken head')
        monkeypatch.setattr(model.bbox_head, 'forward', broken)
        error, match = ZeroDivisionError, 'broken head'
    elif fault == 'skipped_layer':
        monkeypatch.setattr(layers[1], 'cross_attn', layers[1].cross_attn)
        real = layers[1].forward

        def without_cross_attn(*args, **kwargs):
            cross_attn = layers[1].cross_attn
            cross_attn._forward_pre_hooks.clear()  # as if the layer never called it
            return real(*args, **kwargs)
        monkeypatch.setattr(layers[1], 'forward', without_cross_attn)
        error, match = RuntimeError, ('Some decoder layers did not call their '
                                      'cross-attention during the forward')
    else:
        def refuse(*args, **kwargs):
            raise RuntimeError('cannot register')
        monkeypatch.setattr(layers[1].cross_attn, 'register_forward_pre_hook', refuse)
        error, match = RuntimeError, 'cannot register'
    with pytest.raises(error, match=match):
        analyze_cross_attention(model, inputs, samples)
    assert _hooks(model) == hooks


def test_training_mode_is_refused():
    model = build('conditional').train()
    inputs, samples = make_batch(SIZES, num_classes=4)
    with pytest.raises(ValueError, match=r'needs model\.eval\(\)'):
        analyze_cross_attention(model, inputs, samples)


def _load_tool():
    spec = importlib.util.spec_from_file_location('vis_attention',
                                                  ROOT / 'tools' / 'vis_attention.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _checkpoint(kind: str, tmp_path: Path) -> Path:
    model = build(kind)
    path = tmp_path / f'{kind}.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict(dataset_meta=dict(
        classes=('ellipse', 'rectangle', 'triangle', 'cross')))), path)
    return path


@pytest.fixture(scope='module')
def image(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp('img') / 'shapes.png'
    pixels = np.random.default_rng(0).integers(0, 255, (128, 96, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.mark.parametrize('kind', ['conditional', 'detr'])
def test_tool_writes_pngs(kind, image, tmp_path, capsys):
    tool = _load_tool()
    out = tmp_path / 'out'
    pngs = tool.main([str(ROOT / CONFIGS[kind]), str(_checkpoint(kind, tmp_path)), str(image),
                      '--heads', '0', '3', '--top-k', '2', '--out-dir', str(out)])
    assert len(pngs) == 2
    printed = capsys.readouterr().out
    for png in pngs:
        assert str(png) in printed
        with Image.open(png) as img:
            img.load()  # decodes the whole PNG
            assert img.size[0] > 100 and img.size[1] > 100


def test_tool_errors(image, tmp_path):
    tool = _load_tool()
    config = str(ROOT / CONFIGS['conditional'])
    ckpt = str(_checkpoint('conditional', tmp_path))
    with pytest.raises(SystemExit) as err:
        tool.main([config, ckpt, str(tmp_path / 'missing.png')])
    assert err.value.code == f'error: no such image: {tmp_path / "missing.png"}'
    with pytest.raises(SystemExit) as err:
        tool.main([config, ckpt, str(image), '--layer', '2'])
    assert err.value.code == ('error: --layer 2 is out of range: this model has 2 decoder '
                              'layers, allowed -2..1')
    with pytest.raises(SystemExit) as err:
        tool.main([config, ckpt, str(image), '--heads', '0', '8'])
    assert err.value.code == ('error: --heads [8] out of range: this model has 8 heads, '
                              'allowed 0..7')


def test_box_regions():
    from cdetr_mmdet.analysis.box_regions import REGIONS, region_index, region_mass
    # 8 x 8 cells of 16 px; a box over cells x 2..5, y 1..6 (inclusive).
    regions = region_index((32., 16., 96., 112.), (8, 8), (128, 128))
    names = [[REGIONS[i] for i in row] for row in regions.tolist()]
    assert names[0][0] == 'outside' and names[3][7] == 'outside'
    assert names[3][2] == 'left' and names[3][5] == 'right'
    assert names[1][3] == 'top' and names[6][4] == 'bottom'
    assert names[3][3] == 'inside' and names[4][4] == 'inside'
    attn = torch.zeros(2, 8, 8)
    attn[0, 3, 2] = attn[0, 4, 2] = 0.5  # the left edge
    attn[1] = 1 / 64  # uniform
    mass = region_mass(attn, regions)
    assert mass[0].tolist() == [0, 1, 0, 0, 0, 0]
    torch.testing.assert_close(mass[1].sum(), torch.tensor(1.))
    assert mass[1, 5] == pytest.approx(40 / 64)  # 24 of the 64 cells are in the box


def test_best_f1_threshold(tmp_path):
    from tools.demo_pictures import best_f1_threshold, stats_at, threshold_table
    ann = dict(images=[dict(id=1, file_name='a.png')], categories=[dict(id=1, name='x')],
               annotations=[dict(id=1, image_id=1, category_id=1, bbox=[0, 0, 10, 10]),
                            dict(id=2, image_id=1, category_id=1, bbox=[50, 50, 10, 10])])
    dets = [dict(image_id=1, category_id=1, bbox=[0, 0, 10, 10], score=0.9),
            dict(image_id=1, category_id=1, bbox=[1, 0, 10, 10], score=0.8),  # duplicate
            dict(image_id=1, category_id=1, bbox=[50, 51, 10, 10], score=0.5),
            dict(image_id=1, category_id=1, bbox=[90, 90, 5, 5], score=0.3),  # false positive
            # The first query's box again, under another class: counted once.
            dict(image_id=1, category_id=2, bbox=[0, 0, 10, 10], score=0.85)]
    (tmp_path / 'ann.json').write_text(json.dumps(ann))
    (tmp_path / 'dets.json').write_text(json.dumps(dets))
    table = threshold_table(str(tmp_path / 'dets.json'), str(tmp_path / 'ann.json'))
    assert table['scores'].tolist() == [0.9, 0.8, 0.5, 0.3]
    assert stats_at(table, 0.85) == dict(score_thr=0.85, detections=1, precision=1.0,
                                         recall=0.5, f1=0.667, duplicates=0)
    assert stats_at(table, 0.25)['duplicates'] == 1 and stats_at(table, 0.25)['f1'] == 0.667
    # F1 0.8 from 0.31 to 0.50 (3 detections, 2 right); ties go to the higher threshold.
    assert best_f1_threshold(table) == dict(score_thr=0.5, detections=3, precision=0.667,
                                            recall=1.0, f1=0.8, duplicates=1)


def test_attention_stats_script(tmp_path):
    from cdetr_mmdet.data.synthetic_shapes import ensure_dataset
    spec = importlib.util.spec_from_file_location(
        'attention_stats', ROOT / 'benchmarks' / 'attention_stats.py')
    stats = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stats)
    ensure_dataset(tmp_path / 'data', num_train=1, num_val=3)
    args = ['--models', '--num-images', '2', '--data-dir', str(tmp_path / 'data'),
            '--out', str(tmp_path / 'stats'), '--figure-images', '0', '1']
    for kind in ('conditional', 'detr'):
        args += ['--model-file', kind, '1', str(ROOT / CONFIGS[kind]),
                 str(_checkpoint(kind, tmp_path))]
    results = stats.main(args)
    assert [r['model'] for r in results] == ['conditional', 'detr']
    for r in results:
        assert r['images'] == 2 and r['objects'] > 0
        for name in ('spatial', 'content', 'combined'):
            assert all(0 <= v <= 1 for layer in r['inside'][name] for v in layer)
        for layer in r['spatial_regions']:  # each head's regions hold all its mass
            assert all(abs(sum(mass) - 1) < 1e-4 for mass in layer)
    table = (tmp_path / 'stats.md').read_text()
    assert '| conditional | 1 | 2 |' in table and '| detr | 1 | 7 |' in table
    assert json.loads((tmp_path / 'stats.json').read_text())['results'][1]['model'] == 'detr'
    assert len(list(tmp_path.glob('*_epoch1_img*.png'))) >= 2
    # Figure 1: one PNG per drawn image, holding both models' rows.
    assert sorted(p.name for p in tmp_path.glob('figure1_img*.png')) == [
        'figure1_img0.png', 'figure1_img1.png']
