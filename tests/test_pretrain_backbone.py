"""benchmarks/pretrain_backbone.py: the convergence benchmark's backbone pre-training."""
import json

import pytest
import torch
from mmdet.registry import MODELS
from mmengine.config import Config

import pretrain_backbone  # benchmarks/, on pytest.ini's pythonpath
from conftest import ROOT

CONFIG = ROOT / 'configs' / 'convergence' / 'conditional_detr_r18_shapes_d256.py'
TINY = dict(num_train=32, num_val=8, epochs=1, batch_size=16)


def test_render_split_is_deterministic_multi_hot_and_has_its_own_seed_stream():
    images, labels = pretrain_backbone.render_split(12, 0, dict(pretrain_backbone.DEFAULTS))
    assert images.shape == (12, 3, 128, 128) and images.dtype == torch.uint8
    assert labels.shape == (12, 4) and set(labels.unique().tolist()) <= {0.0, 1.0}
    # min_objects=0: background-only images (all-zero rows) are part of the task.
    assert (labels.sum(1) == 0).any() and (labels.sum(1) > 0).any()
    again, again_labels = pretrain_backbone.render_split(12, 0, dict(pretrain_backbone.DEFAULTS))
    assert torch.equal(images, again) and torch.equal(labels, again_labels)
    val, _ = pretrain_backbone.render_split(12, 1, dict(pretrain_backbone.DEFAULTS))
    assert not torch.equal(images, val)  # the val split is another seed stream


def test_pretrained_weights_reach_every_detector_of_the_benchmark(tmp_path):
    out = tmp_path / 'backbone.pth'
    result = pretrain_backbone.pretrain(str(CONFIG), out, TINY, log=lambda *_: None)
    assert result['history'][-1]['epoch'] == 1 and 0 <= result['history'][-1]['val_label_acc'] <= 1
    state = torch.load(out, weights_only=True)['state_dict']

    for name in ('conditional_detr_r18_shapes_d256.py', 'detr_r18_shapes_d256.py',
                 'mmdet_conditional_detr_r18_shapes_d256.py'):
        cfg = Config.fromfile(str(CONFIG.parent / name))
        cfg.model.backbone.init_cfg.checkpoint = str(out)
        model = MODELS.build(cfg.model)
        model.init_weights()
        loaded = model.backbone.state_dict()
        assert set(loaded) == set(state), name
        for key, value in state.items():
            assert torch.equal(loaded[key], value), (name, key)

    # Same settings: reused, not retrained; other settings: retrained.
    mtime = out.stat().st_mtime_ns
    assert pretrain_backbone.pretrain(str(CONFIG), out, TINY, log=lambda *_: None) == result
    assert out.stat().st_mtime_ns == mtime
    pretrain_backbone.pretrain(str(CONFIG), out, dict(TINY, seed=1), log=lambda *_: None)
    assert json.loads((tmp_path / 'backbone.pth.json').read_text())['settings']['seed'] == 1


def test_pretraining_trains_the_whole_backbone():
    # The detector config freezes the stem, stage 1 and BN; pre-training must not.
    assert Config.fromfile(str(CONFIG)).model.backbone.frozen_stages == 1
    backbone = pretrain_backbone.build_classifier(str(CONFIG)).backbone
    assert all(p.requires_grad for p in backbone.parameters())
    assert backbone.frozen_stages == -1 and backbone.norm_eval is False


@pytest.mark.parametrize('bad, message', [
    (dict(num_train=8, batch_size=16), 'num_train (8) >= batch_size (16)'),
    (dict(epochs=0), "'epochs' must be a positive int"),
])
def test_sizes_that_give_an_empty_epoch_are_refused(tmp_path, bad, message):
    with pytest.raises(ValueError, match=message.replace('(', r'\(').replace(')', r'\)')):
        pretrain_backbone.pretrain(str(CONFIG), tmp_path / 'b.pth', dict(TINY, **bad))
    assert not (tmp_path / 'b.pth').exists()
