"""tools/drop_class_head.py: fine-tuning starts from a headless checkpoint."""
import subprocess
import sys

import torch
from mmdet.registry import MODELS
from mmengine.config import Config
from mmengine.runner import load_checkpoint

from conftest import ROOT, shrink_model_cfg


def test_dropped_head_checkpoint_loads_into_other_class_count(tmp_path):
    cfg = Config.fromfile(str(ROOT / 'configs' / 'conditional_detr_r50_50e.py'))
    source = MODELS.build(shrink_model_cfg(cfg.model, num_classes=80))
    src, dst = tmp_path / 'coco.pth', tmp_path / 'headless.pth'
    torch.save({'state_dict': source.state_dict(), 'meta': {}}, src)
    out = subprocess.run([sys.executable, 'tools/drop_class_head.py',
                          str(src), str(dst)], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert 'bbox_head.fc_cls.weight' in out.stdout
    target = MODELS.build(shrink_model_cfg(cfg.model, num_classes=3))
    target.init_weights()
    fresh_bias = target.bbox_head.fc_cls.bias.clone()
    load_checkpoint(target, str(dst), strict=False)
    torch.testing.assert_close(target.bbox_head.fc_cls.bias, fresh_bias)
    torch.testing.assert_close(target.query_embedding.weight,
                               source.query_embedding.weight)


def test_missing_state_dict_is_explained(tmp_path):
    src = tmp_path / 'official.pth'
    torch.save({'model': {'class_embed.weight': torch.zeros(2, 2)}}, src)
    out = subprocess.run([sys.executable, 'tools/drop_class_head.py',
                          str(src), str(tmp_path / 'x.pth')], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode != 0
    assert 'no "state_dict" key' in out.stderr
    assert 'convert_checkpoint.py' in out.stderr
