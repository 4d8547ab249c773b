"""Corrupted checkpoints fail, naming every offending key, shape or global.

Nothing loads "with warnings": a source key left unconverted, a model key
left unfilled, an extra key, a wrong shape, a key filled twice or a file
that needs arbitrary unpickling each stop the conversion with a message
that lists all of them.
"""
import pytest
import torch

from cdetr_mmdet.checkpoint.safety import UnsafeCheckpointError
from cdetr_mmdet.convert import (CheckpointMismatchError, build_target_model,
                                 convert_checkpoint, convert_state_dict,
                                 load_source_state_dict)
from cdetr_testing import expand_to_category_rows, ours_to_official

SMALL = {
    'model.num_queries': 10, 'model.backbone.depth': 18,
    'model.neck.in_channels': [512], 'model.encoder.num_layers': 1,
    'model.decoder.num_layers': 2,
}


@pytest.fixture(scope='module')
def model():
    return build_target_model(cfg_options=SMALL)


@pytest.fixture
def official(model):
    """A valid official-layout state dict for ``model`` (91 class rows)."""
    state_dict = ours_to_official(model.state_dict())
    for name in ('weight', 'bias'):
        key = f'class_embed.{name}'
        state_dict[key] = expand_to_category_rows(state_dict[key])
    return state_dict


def mismatch(state_dict, model, source='official', **kwargs):
    with pytest.raises(CheckpointMismatchError) as info:
        convert_state_dict(state_dict, source, model, **kwargs)
    return info.value


def test_valid_checkpoint_converts(official, model):
    model.load_state_dict(convert_state_dict(official, 'official', model),
                          strict=True)


def test_missing_key(official, model):
    del official['transformer.decoder.layers.1.norm2.weight']
    del official['query_embed.weight']
    error = mismatch(official, model)
    assert sorted(error.missing) == ['decoder.layers.1.norm2.weight',
                                     'query_embedding.weight']
    assert '2 model keys not filled' in str(error)
    assert 'decoder.layers.1.norm2.weight' in str(error)
    assert 'query_embedding.weight' in str(error)


def test_extra_keys(official, model):
    official['transformer.decoder.layers.7.norm2.weight'] = torch.zeros(256)
    official['criterion.empty_weight'] = torch.zeros(92)
    error = mismatch(official, model)
    message = str(error)
    assert ('decoder.layers.7.norm2.weight (from '
            'transformer.decoder.layers.7.norm2.weight)') in message
    assert 'criterion.empty_weight: no mapping rule' in message


def test_wrong_shape(official, model):
    official['input_proj.weight'] = torch.zeros(256, 1024, 1, 1)
    error = mismatch(official, model)
    assert ('neck.convs.0.conv.weight: (256, 1024, 1, 1) from '
            'input_proj.weight vs (256, 512, 1, 1) in the model'
            ) in str(error)
    assert list(error.mismatched) == ['neck.convs.0.conv.weight']


def test_all_problems_reported_at_once(official, model):
    del official['bbox_embed.layers.2.bias']
    official['bbox_embed.layers.3.bias'] = torch.zeros(4)
    official['query_embed.weight'] = torch.zeros(300, 256)
    message = str(mismatch(official, model))
    assert 'bbox_head.fc_reg.layers.2.bias' in message  # missing
    assert 'bbox_head.fc_reg.layers.3.bias (from bbox_embed' in message
    assert 'query_embedding.weight: (300, 256) from query_embed' in message


def test_class_head_rows(official, model):
    # 91 rows kept whole against an 80-class model: shape error with a hint.
    error = mismatch(official, model, keep_91=True)
    assert 'bbox_head.fc_cls.weight: (91, 256)' in str(error)
    assert '--keep-91-classes' in str(error)
    # A head that is not indexed by COCO category id cannot be remapped.
    official['class_embed.weight'] = torch.zeros(5, 256)
    error = mismatch(official, model)
    assert 'class_embed.weight: has 5 class rows' in str(error)


def test_hf_incomplete_qkv_and_duplicate_layouts(model):
    hf = {'model.encoder.layers.0.self_attn.q_proj.weight': torch.zeros(2, 2),
          'model.encoder.layers.0.self_attn.k_proj.weight': torch.zeros(2, 2),
          'model.input_projection.bias': torch.zeros(256),
          'model.decoder.layers.0.sa_v_proj.bias': torch.zeros(256),
          'model.decoder.layers.0.self_attn.v_proj.bias': torch.zeros(256)}
    error = mismatch(hf, model, source='hf')
    message = str(error)
    assert ('model.encoder.layers.0.self_attn.q_proj.weight: encoder layer 0 '
            'lacks the v projection weight') in message
    assert 'keys written by several source keys' in message
    assert ('model.decoder.layers.0.sa_v_proj.bias, '
            'model.decoder.layers.0.self_attn.v_proj.bias') in message


def test_mmdet_rejects_keep_91(model):
    with pytest.raises(ValueError, match='keep_91 applies to official'):
        convert_state_dict({}, 'mmdet', model, keep_91=True)


def test_wrong_wrapper_and_non_tensors(tmp_path, official):
    torch.save(official, tmp_path / 'bare.pth')  # no {'model': ...}
    with pytest.raises(ValueError, match="expected a dict with key 'model'"):
        load_source_state_dict(tmp_path / 'bare.pth', 'official')
    torch.save({'state_dict': {'a': torch.zeros(1), 'b': {'c': 1}}},
               tmp_path / 'nested.pth')
    with pytest.raises(ValueError, match=r"not tensors .*\['b'\]"):
        load_source_state_dict(tmp_path / 'nested.pth', 'mmdet')


class Payload:
    """Unpickling this would call ``print`` (any callable would do)."""

    def __reduce__(self):
        return print, ('payload ran',)


def test_pickled_code_is_refused(tmp_path, official, capsys):
    path = tmp_path / 'unsafe.pth'
    torch.save({'model': official, 'extra': Payload()}, path)
    with pytest.raises(UnsafeCheckpointError) as info:
        convert_checkpoint(path, tmp_path / 'out.pth', 'official',
                           cfg_options=SMALL)
    assert 'builtins.print' in str(info.value)
    assert 'payload ran' not in capsys.readouterr().out
    assert not (tmp_path / 'out.pth').exists()
