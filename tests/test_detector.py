"""Detector-level invariants, parameter count and registry hygiene."""
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
    model = MODELS.build(tiny_model_cfg)
    model.init_weights()
    head = model.bbox_head
    assert torch.all(head.fc_reg.layers[-1].weight == 0)
    assert torch.allclose(head.fc_cls.bias, torch.tensor(-4.59512))
    # Out-projection biases of the decoder attentions start at zero.
    assert torch.all(model.decoder.layers[0].cross_attn.out_proj.bias == 0)
    # Xavier-uniform bound for a square d x d matrix: sqrt(6 / (2 d)).
    weight = model.decoder.layers[1].cross_attn.qpos_sine_proj.weight
    assert weight.abs().max() <= (6 / (2 * 64))**.5


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
            '"CdetrHead", "CdetrFocalLoss")] + '
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
