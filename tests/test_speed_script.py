"""Smoke tests of ``benchmarks/speed.py`` with a tiny setting (no timing checks)."""
import json
import statistics
import subprocess
import sys

import pytest

import _speed_variants as sv  # benchmarks/, on pytest.ini's pythonpath
import speed
from conftest import ROOT

TINY = ['--depth', '18', '--size', '64', '--layers', '1', '--queries', '10',
        '--steps', '2', '--warmup', '1', '--memory-steps', '1',
        '--threads', '1']
VARIANTS = ['mmdet', 'ours', 'ours:amp+cl', 'ours:opt', 'ours:hfrecipe', 'hf',
            'hf:official']


def test_speed_script_writes_the_expected_json(tmp_path):
    out = tmp_path / 'speed.json'
    proc = subprocess.run(
        [sys.executable, str(ROOT / 'benchmarks' / 'speed.py'), *TINY,
         '--variants', ','.join(VARIANTS), '--breakdown', '--no-memory',
         '--out', str(out)],
        capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'x mmdet' in proc.stdout and 'x hf' in proc.stdout  # the table
    result = json.loads(out.read_text())
    assert result['config']['variants'] == VARIANTS
    assert {'cpu', 'logical_cpus', 'torch_threads'} <= set(result['machine'])
    assert result['machine']['torch_threads'] == 1
    assert len(result['load_avg']['before']) == 3
    for name in VARIANTS:
        res = result['variants'][name]
        for key in ('train', 'infer'):
            values = res[key]['values']  # the 2 timed steps, warm-up left out
            assert len(values) == res[key]['n'] == 2 and all(v > 0 for v in values)
            assert (res[key]['min'], res[key]['median'], res[key]['max']) == (
                min(values), statistics.median(values), max(values))
            assert res[key]['first_s'] > 0  # the first warm-up step
            for ref in ('mmdet', 'hf'):  # ratios of medians, each against its reference
                assert result['ratios'][ref][name][key] == pytest.approx(
                    res[key]['median'] / result['variants'][ref][key]['median'], rel=1e-12)
        assert 'memory' not in res  # measured in the next test
        if name.startswith('hf'):
            assert 'breakdown' not in res
        else:
            assert set(res['breakdown']) == set(sv.STAGES)
            assert (res['breakdown']['matcher']['median'] <=
                    res['breakdown']['head+loss']['median'])
        for ref in ('mmdet', 'hf'):
            assert set(result['ratios'][ref][name]) == {'train', 'infer'}
    assert result['ratios']['mmdet']['mmdet'] == {'train': 1.0, 'infer': 1.0}
    assert result['ratios']['hf']['hf'] == {'train': 1.0, 'infer': 1.0}


def test_main_from_python_passes_its_argv_to_the_memory_subprocess(
        monkeypatch, tmp_path):
    """The memory child gets ``main``'s argv, not the caller's sys.argv."""
    monkeypatch.setattr(sys, 'argv', ['pytest', '--no-such-flag'])
    monkeypatch.chdir(tmp_path)
    result = speed.main([*TINY, '--steps', '1', '--warmup', '0',
                         '--variants', 'ours', '--profile', '5'])
    assert list(result['variants']) == ['mmdet', 'ours']  # mmdet added
    for name in ('mmdet', 'ours'):  # one profiled step each, 5 op rows
        assert 'Self CPU' in result['profiles'][name]
        assert 'aten::' in result['profiles'][name]
    for res in result['variants'].values():
        assert {'growth_mb', 'peak_mb', 'before_mb',
                'process_peak_rss_mb'} <= set(res['memory'])
        assert res['memory']['growth_mb'] >= 0
        assert res['train']['n'] == 1
    assert result['ratios']['mmdet']['mmdet']['memory'] == 1.0


def test_variant_specs_parse_once_with_clear_errors():
    spec = sv.VariantSpec.parse('ours:cl+amp')
    assert spec == sv.VariantSpec('ours', amp=True, channels_last=True)
    assert spec.name == 'ours:amp+cl'
    assert sv.VariantSpec.parse('hf', amp=True).name == 'hf:amp'
    assert sv.VariantSpec.parse('mmdet', channels_last=True).name == 'mmdet'
    assert sv.VariantSpec.parse('hf:official').official
    for text, message in [('detr', 'NAME must be mmdet, ours or hf'),
                          ('ours:fast', "unknown option 'fast'"),
                          ('mmdet:cl', "'cl' is an option of ours only"),
                          ('ours:official',
                           "'official' is an option of hf only")]:
        with pytest.raises(ValueError, match=message):
            sv.VariantSpec.parse(text)
    assert sv.VariantSpec.parse('ours:compile+opt').name == 'ours:opt+compile'
    args = speed.parse_args(['--variants', 'ours,ours,hf', '--amp'])
    # Deduplicated; the fp32 mmdet reference added in front.
    assert [s.name for s in args.variants] == ['mmdet', 'ours:amp', 'hf:amp']


def test_hf_recipe_variant_trains_ours_with_hfs_defaults(tmp_path,
                                                       monkeypatch):
    """':hfrecipe': no attention-weight dropout, losses on the last layer,
    residual and FFN dropout as before; the weights are the plain model's."""
    monkeypatch.chdir(tmp_path)
    args = speed.parse_args([*TINY, '--layers', '2', '--variants',
                             'ours:hfrecipe'])
    spec = sv.VariantSpec.parse('ours:hfrecipe')
    assert spec.hf_recipe and spec.name == 'ours:hfrecipe'
    with pytest.raises(ValueError, match="'hfrecipe' is an option of ours"):
        sv.VariantSpec.parse('hf:hfrecipe')
    lite, plain = sv.build_model(spec, args), sv.build_model(
        sv.VariantSpec('ours'), args)
    assert list(lite.state_dict()) == list(plain.state_dict())
    variant = sv.Variant(spec, lite, args)
    plain_variant = sv.Variant(sv.VariantSpec('ours'), plain, args)
    lite.train(), plain.train()
    losses = lite(variant.inputs, variant.samples, mode='loss')
    assert sorted(losses) == ['loss_bbox', 'loss_cls', 'loss_iou']
    assert 'd0.loss_cls' in plain(plain_variant.inputs,
                                  plain_variant.samples, mode='loss')
    enc, dec = lite.encoder.layers[0], lite.decoder.layers[1]
    assert enc.self_attn.dropout == 0 and enc.dropout.p == 0.1
    assert dec.self_attn.attn_drop == dec.cross_attn.attn_drop == 0
    assert dec.dropout1.p == 0.1


def test_compiled_variant_keeps_parameter_names_and_reports_compile_time(
        monkeypatch, tmp_path):
    """':compile' compiles encoder, decoder and head in place (the weights
    still load by name); its first step, with the compilation, is reported."""
    monkeypatch.chdir(tmp_path)
    spec = sv.VariantSpec.parse('ours:compile')
    args = speed.parse_args([*TINY, '--variants', 'ours:compile'])
    compiled, plain = sv.build_model(spec, args), sv.build_model(sv.VariantSpec('ours'), args)
    assert list(compiled.state_dict()) == list(plain.state_dict())
    assert all(getattr(compiled, p)._compiled_call_impl is not None for p in sv.COMPILED_PARTS)
    result = speed.main([*TINY, '--steps', '1', '--variants', 'ours:compile', '--no-memory'])
    train = result['variants']['ours:compile']['train']
    assert train['first_s'] > train['median']


def test_dropout_ab_times_both_arms_and_restores_attention(capsys):
    """The cheap-dropout A/B runs both arms and leaves our attention in place."""
    import dropout_ab
    from cdetr_mmdet.models import attention
    from cdetr_mmdet.models import transformer as encoder  # the encoder lives there
    before = attention.attention
    result = dropout_ab.main(['--threads', '1', '--steps', '2', '--depth', '18',
                              '--size', '64', '--layers', '1', '--queries', '10'])
    assert len(result['old']) == len(result['new']) == 2
    assert result['ratio'] > 0
    assert attention.attention is before and encoder.attention is before
    out = capsys.readouterr().out
    assert '--- old' in out and 'aten::bernoulli_' in out  # PyTorch's masks in the old arm
    assert '--- new' in out


def test_group_detr_variant_reports_time_memory_and_flop_bound(
        monkeypatch, tmp_path, capsys):
    """':gK' adds plain ours as the K = 1 reference and counts FLOPs."""
    spec = sv.VariantSpec.parse('ours:g11+amp')
    assert spec.group_detr == 11 and spec.name == 'ours:amp+g11'
    assert sv.VariantSpec.parse(spec.name) == spec  # the memory child's name
    for text in ('mmdet:g3', 'ours:g2+g3', 'ours:gK'):
        with pytest.raises(ValueError):
            sv.VariantSpec.parse(text)
    monkeypatch.chdir(tmp_path)
    result = speed.main([*TINY, '--steps', '1', '--warmup', '0',
                         '--variants', 'ours:g3'])
    assert list(result['variants']) == ['mmdet', 'ours', 'ours:g3']
    model = sv.build_model(sv.VariantSpec.parse('ours:g3'),
                           speed.parse_args(TINY))
    assert model.query_embedding.weight.shape[0] == 3 * 10
    vs = result['ratios']['ours']['ours:g3']
    assert {'train', 'infer', 'memory', 'train_flops'} <= set(vs)
    assert vs['train_flops'] > 1  # K times the decoder and head
    assert result['variants']['mmdet'].get('train_flops') is None
    assert 'FLOP bound of the added decoder work' in capsys.readouterr().out
