"""Detector-level invariants, parameter count and registry hygiene."""
import math
import subprocess
import sys

import pytest
import torch
from mmdet.registry import MODELS
from mmengine.config import Config

from conftest import ROOT, make_batch, randomize_


def test_padding_does_not_change_transformer_outputs(tiny_model_cfg):
    """Padded keys are masked: an image's outputs do not depend on padding."""
    model = MODELS.build(tiny_model_cfg).eval()
    randomize_(model)
    feats = torch.randn(1, 64, 2, 3)  # stride-32 features of a 64x96 image
    _, samples = make_batch(sizes=((64, 96), ), num_gts=(1, ))
    padded = torch.randn(1, 64, 4, 5) * 10  # garbage in the padding
    padded[..., :2, :3] = feats
    _, padded_samples = make_batch(sizes=((64, 96), ), num_gts=(1, ))
    padded_samples[0].set_metainfo(dict(batch_input_shape=(128, 160),
                                        pad_shape=(128, 160)))
    # A second, full-size image makes the batch really padded.
    other = torch.randn(1, 64, 4, 5)
    _, other_samples = make_batch(sizes=((128, 160), ), num_gts=(1, ))
    with torch.no_grad():
        alone = model.forward_transformer((feats, ), samples)
        batched = model.forward_transformer(
            (torch.cat([padded, other]), ), padded_samples + other_samples)
    torch.testing.assert_close(batched['hidden_states'][:, :1],
                               alone['hidden_states'], rtol=0, atol=1e-5)


def test_r50_parameter_count_outside_backbone_with_91_classes():
    cfg = Config.fromfile(str(ROOT / 'configs' /
                              'conditional_detr_r50_50e.py'))
    cfg.model.backbone.init_cfg = None
    cfg.model.bbox_head.num_classes = 91
    model = MODELS.build(cfg.model)
    count = sum(p.numel() for name, p in model.named_parameters()
                if not name.startswith('backbone.'))
    assert count == 19_963_489


def test_init_follows_the_official_recipe(tiny_model_cfg):
    """The official init, told apart from mmdet's default one (``DETR.init_weights`` +
    ``ConvModule``'s kaiming init + a random last box layer): neck convs keep PyTorch's
    ``Conv2d`` init (kaiming-uniform a=sqrt(5): |w|, |b| <= 1/sqrt(fan_in), bias non-zero;
    mmcv's kaiming-normal has std sqrt(2/fan_out) and a zero bias), the last box layer is
    zero, the class bias is the focal prior and every transformer matrix is xavier-uniform
    (reaching past PyTorch's default bound 1/sqrt(fan_in) where that is < 0.9 x xavier's)."""
    torch.manual_seed(0)
    model = MODELS.build(tiny_model_cfg)
    model.init_weights()
    head = model.bbox_head
    assert torch.all(head.fc_reg.layers[-1].weight == 0)
    assert torch.all(head.fc_reg.layers[-1].bias == 0)
    torch.testing.assert_close(head.fc_cls.bias, torch.full((3, ), -math.log(99)))
    convs = [m for m in model.neck.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs
    for conv in convs:
        bound = 1 / math.sqrt(conv.weight[0].numel())  # fan_in = in_channels * k * k
        assert conv.weight.abs().max() <= bound and conv.bias.abs().max() <= bound
        assert conv.weight.abs().max() > 0.9 * bound and conv.bias.abs().min() > 0
    # Out-projection biases of the decoder attentions start at zero.
    assert torch.all(model.decoder.layers[0].cross_attn.out_proj.bias == 0)
    distinguished = 0
    for name, p in [*model.encoder.named_parameters(), *model.decoder.named_parameters()]:
        if p.dim() < 2:
            continue
        fan_out, fan_in = p.shape[0], p[0].numel()
        xavier = math.sqrt(6 / (fan_in + fan_out))
        assert p.abs().max() <= xavier, name
        if p.numel() >= 256 and 1 / math.sqrt(fan_in) < 0.9 * xavier:
            # P(max < 0.9 x bound) = 0.9 ** numel < 2e-12 for a uniform draw.
            assert p.abs().max() > 0.9 * xavier, name
            distinguished += 1
    assert distinguished >= 10


def test_training_step_uses_every_parameter(tiny_model_cfg):
    """Needed by DDP with find_unused_parameters=False."""
    model = MODELS.build(tiny_model_cfg)
    model.init_weights()
    inputs, samples = make_batch(num_gts=(2, 0))
    losses = model.loss(inputs, samples)
    sum(losses.values()).backward()
    unused = [n for n, p in model.named_parameters()
              if p.requires_grad and p.grad is None]
    assert unused == []


@pytest.mark.parametrize('order', [
    'import cdetr_mmdet; import mmdet.models',
    'import mmdet.models; import cdetr_mmdet',
])
def test_import_order_and_no_name_clash(order):
    code = (f'{order}\n'
            'from mmdet.registry import MODELS, TASK_UTILS\n'
            'from mmdet.models import ConditionalDETR, ConditionalDETRHead\n'
            'assert MODELS.get("ConditionalDETR") is ConditionalDETR\n'
            'assert MODELS.get("ConditionalDETRHead") is ConditionalDETRHead\n'
            'ours = [MODELS.get(n) for n in ("CdetrConditionalDETR", '
            '"CdetrTransformerEncoder", "CdetrTransformerDecoder", '
            '"CdetrHead", "CdetrDC5ResNet")] + '
            '[TASK_UTILS.get("CdetrHungarianMatcher")]\n'
            'assert all(c.__module__.startswith("cdetr_mmdet") for c in ours)\n'
            'print("ok")\n')
    out = subprocess.run([sys.executable, '-c', code], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == 'ok'


REGISTRY_SNAPSHOT = r"""
import mmdet.registry, mmengine.registry
from mmdet.utils import register_all_modules
from mmengine.registry import Registry
register_all_modules(init_default_scope=False)
registries = {f'{m.__name__}.{n}': r for m in (mmdet.registry, mmengine.registry)
              for n, r in vars(m).items() if isinstance(r, Registry)}
before = {k: dict(r.module_dict) for k, r in registries.items()}
import cdetr_mmdet
changed = [f'{k}.{n}' for k, r in registries.items() for n, c in before[k].items()
           if r.module_dict.get(n) is not c]
added = sorted(n for k, r in registries.items() for n in r.module_dict if n not in before[k])
assert changed == [], f're-bound (force=True?): {changed}'
assert 'CdetrConditionalDETR' in added, added
assert all(name.startswith('Cdetr') for name in added), added
print('ok')
"""


def test_registration_adds_cdetr_names_and_overrides_nothing():
    out = subprocess.run([sys.executable, '-c', REGISTRY_SNAPSHOT], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == 'ok'


def test_forward_runs_our_glue_only_and_equals_the_documented_map(
        tiny_model_cfg, monkeypatch):
    """No step of mmdet's DETR glue runs; the output is the docstring's map.

    mmdet's ``pre_transformer``, ``forward_encoder``, ``pre_decoder``,
    ``forward_decoder`` and ``forward_transformer`` are made to fail: a
    change of theirs (e.g. a renamed keyword) cannot reach our model. The
    detections equal the components called by hand with explicit arguments.
    """
    from mmdet.models.detectors import DETR
    from mmdet.models.detectors.base_detr import DetectionTransformer

    def mmdet_glue(*args, **kwargs):
        raise AssertionError('mmdet DETR glue called')

    for name in ('pre_transformer', 'forward_encoder', 'pre_decoder',
                 'forward_decoder'):
        monkeypatch.setattr(DETR, name, mmdet_glue)
    monkeypatch.setattr(DetectionTransformer, 'forward_transformer',
                        mmdet_glue)
    model = MODELS.build(tiny_model_cfg).eval()
    randomize_(model)
    inputs, samples = make_batch(sizes=((128, 160), (64, 64)))  # 2nd padded
    with torch.no_grad():
        cls_ours, box_ours = model(inputs, samples, mode='tensor')
        feat = model.extract_feat(inputs)[-1]  # (bs, d, h, w)
        bs, d, h, w = feat.shape
        pad = torch.ones(bs, *inputs.shape[-2:])
        for i, s in enumerate(samples):
            pad[i, :s.img_shape[0], :s.img_shape[1]] = 0
        mask = torch.nn.functional.interpolate(
            pad[:, None], size=(h, w)).bool()[:, 0]  # (bs, h, w)
        pos = model.positional_encoding(mask).flatten(2).transpose(1, 2)
        memory = model.encoder(query=feat.flatten(2).transpose(1, 2),
                               query_pos=pos,
                               key_padding_mask=mask.flatten(1))
        query_pos = model.query_embedding.weight.expand(bs, -1, -1)
        hidden, refs = model.decoder(
            query=torch.zeros_like(query_pos), query_pos=query_pos,
            memory=memory, memory_pos=pos, memory_mask=mask.flatten(1))
        cls_ref, box_ref = model.bbox_head(hidden, refs)
        losses = model.loss(inputs, samples)
    assert mask.any() and not mask.all()  # really a padded batch
    torch.testing.assert_close(cls_ours, cls_ref, rtol=0, atol=0)
    torch.testing.assert_close(box_ours, box_ref, rtol=0, atol=0)
    assert torch.isfinite(sum(losses.values()))
