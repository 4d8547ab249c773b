"""Ablation benchmark: the paper's section 4.3 variants trained on the convergence setting.

Trains every decoder variant of Meng et al. 2021 (reference point, section
4.3; form of the conditional spatial query, Table 3; form of T, Figure 5) as
``CdetrTransformerDecoder`` switches on top of the convergence benchmark's
config (``configs/convergence/conditional_detr_r18_shapes_d256.py``), with its
data, pre-trained backbone, optimiser, run machinery and resumability
(``benchmarks/convergence.py``: ``configure_run``/``train_one``/``run_all``;
one subprocess per (variant, seed), finished runs skipped, unfinished ones
resumed). Writes ``ablation.json``, ``ablation.png`` (AP against epoch per
variant, mean over seeds) and ``ablation_table.md``: our final AP and mean AP
over the run beside the paper's AP, Kendall's tau between the two, the seed
spread and whether every pair the paper separates by >= 2 AP keeps its order
beyond the seed spread.

Full run (docs/ablations.md)::

    python benchmarks/ablation.py --out-dir work_dirs/ablation

CI smoke run::

    python benchmarks/ablation.py --quick --out-dir /tmp/ablation
"""
import argparse
import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import convergence as conv  # benchmarks/convergence.py, beside this script

BASE_CONFIG = conv.CONFIG_DIR / conv.MODELS['ours'][0]
# name -> (decoder switches, label, the paper's AP: R50, 50 epochs, COCO val).
# Trained in this order, both seeds of a variant side by side, so a run cut
# short still has complete (both-seed) results for the variants the paper
# separates most (its >= 2 AP pairs) first; 'full' (d*d numbers of T per
# query, the slowest) last.
VARIANTS = {
    'csq': ({}, 'CSQ, predicted s, diagonal T (full model)', 40.9),
    'ref_fixed': (dict(reference='fixed'), 'reference s = (0, 0) (DETR)', 36.8),
    'csq_p': (dict(spatial_query='csq_p'), 'CSQ-P (p_q = p_s)', 37.8),
    't_identity': (dict(transform='identity'), 'T identity', 37.8),
    'csq_c': (dict(spatial_query='csq_c'), 'CSQ-C (p_q = f)', 37.1),
    'csq_t': (dict(spatial_query='csq_t'), 'CSQ-T (p_q = lambda_q)', 37.6),
    'ref_learned': (dict(reference='learned'), 'reference s learned per query', 40.7),
    'csq_i': (dict(spatial_query='csq_i'), 'CSQ-I (T from c_q)', 40.2),
    't_scalar': (dict(transform='scalar'), 'T scalar', 39.0),
    't_block': (dict(transform='block'), 'T block (per head)', 40.8),
    't_full': (dict(transform='full'), 'T full matrix', 40.7),
}
# The same model by definition (p_q = p_s): trained once, reported in both rows.
ALIASES = {'t_identity': 'csq_p'}
GROUPS = {  # the paper's three studies; 'csq' is the reference in each
    'reference point (sec. 4.3)': ['csq', 'ref_learned', 'ref_fixed'],
    'spatial query (Table 3)': ['csq', 'csq_i', 'csq_p', 'csq_t', 'csq_c'],
    'transformation T (Fig. 5)': ['csq', 't_block', 't_full', 't_scalar', 't_identity'],
}
FULL = dict(num_train=1000, num_val=200, epochs=4, eval_interval=1, seeds=[0, 1], jobs=2)
QUICK = dict(conv.QUICK, epochs=1, seeds=[0], variants=['csq', 't_identity'])
GAP = 2.0  # the paper's "large effect": pairs at least this far apart in AP


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Options; the run flags are those ``convergence.launch`` passes to a child."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out-dir', default=str(conv.REPO / 'work_dirs' / 'ablation'))
    parser.add_argument('--quick', action='store_true',
                        help=f'CI smoke run: variants {QUICK["variants"]}, '
                        f'{QUICK["num_train"]} train images, {QUICK["epochs"]} epoch, seed 0')
    parser.add_argument('--variants', nargs='+', choices=list(VARIANTS),
                        help='variants to train (all)')
    parser.add_argument('--num-train', type=int, help=f'train images ({FULL["num_train"]})')
    parser.add_argument('--num-val', type=int, help=f'val images ({FULL["num_val"]})')
    parser.add_argument('--epochs', type=int, help=f'training epochs ({FULL["epochs"]})')
    parser.add_argument('--eval-interval', type=int, help='evaluate every N epochs (1)')
    parser.add_argument('--seeds', type=int, nargs='+', help=f'seeds ({FULL["seeds"]})')
    parser.add_argument('--jobs', type=int, help=f'runs trained at once ({FULL["jobs"]})')
    parser.add_argument('--threads', type=int, default=1, help='torch threads per run (1)')
    parser.add_argument('--report-only', action='store_true',
                        help='train nothing; rebuild JSON, PNG and table from the runs so far')
    parser.add_argument('--train-one', nargs=2, metavar=('VARIANT', 'SEED'),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    defaults = QUICK if args.quick else dict(FULL, variants=list(VARIANTS))
    for key, value in defaults.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    # convergence.run_all trains args.models (distinct models) with args.script as the child.
    args.models = list(dict.fromkeys(ALIASES.get(v, v) for v in args.variants))
    args.script = Path(__file__).resolve()
    return args


def variant_config(out_dir: Path, name: str) -> Path:
    """Write (idempotently) the variant's config: the convergence config + its switches."""
    path = out_dir / 'configs' / f'{name}.py'
    text = (f'# benchmarks/ablation.py variant {name!r}: {VARIANTS[name][1]}\n'
            f'_base_ = [{str(BASE_CONFIG)!r}]\n'
            f'model = dict(decoder=dict({", ".join(f"{k}={v!r}" for k, v in VARIANTS[name][0].items())}))\n')
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return path


def register_variants(args: argparse.Namespace) -> None:
    """Make the variants known to convergence.train_one (config path, label)."""
    out_dir = Path(args.out_dir).resolve()
    for name in args.models:
        conv.MODELS[name] = (str(variant_config(out_dir, name)), VARIANTS[name][1])


# ----------------------------------------------------------------------------- results
def variant_result(out_dir: Path, name: str, args: argparse.Namespace) -> Dict:
    """Curves and per-seed final / run-mean AP of one variant (complete seeds only)."""
    runs = {str(s): [r for r in conv.read_rows(conv.run_dir(out_dir, ALIASES.get(name, name), s)
                                               / 'metrics.jsonl') if r['epoch'] <= args.epochs]
            for s in args.seeds}
    complete = {s: rows for s, rows in runs.items() if rows and rows[-1]['epoch'] == args.epochs}
    epochs = sorted({r['epoch'] for rows in runs.values() for r in rows})
    curve = []
    for e in epochs:
        values = [r['AP'] for rows in runs.values() for r in rows if r['epoch'] == e]
        curve.append(sum(values) / len(values))
    final = {s: rows[-1]['AP'] for s, rows in complete.items()}
    run_mean = {s: sum(r['AP'] for r in rows) / len(rows) for s, rows in complete.items()}

    def stats(values: Dict) -> Optional[Dict]:
        v = list(values.values())
        return dict(mean=sum(v) / len(v), min=min(v), max=max(v), per_seed=values) if v else None

    switches, label, paper = VARIANTS[name]
    return dict(label=label, switches=switches, paper_AP=paper, trained_as=ALIASES.get(name, name),
                runs=runs, epochs=epochs, AP_mean_curve=curve, complete_seeds=sorted(complete),
                final_AP=stats(final), mean_AP_over_run=stats(run_mean))


def compare(variants: Dict, key: str) -> Dict:
    """Kendall's tau (paper vs ours) and the >= GAP pairs' order, on ``key``."""
    from scipy.stats import kendalltau
    names = [n for n, v in variants.items() if v[key] and n not in ALIASES]
    result = dict(metric=key, variants=names, tau=None, p_value=None, pairs=[])
    if len(names) >= 2:
        tau = kendalltau([variants[n]['paper_AP'] for n in names],
                         [variants[n][key]['mean'] for n in names])
        if tau.statistic == tau.statistic:  # NaN when one column is constant
            result.update(tau=float(tau.statistic), p_value=float(tau.pvalue))
    for hi in names:
        for lo in names:
            if variants[hi]['paper_AP'] - variants[lo]['paper_AP'] < GAP:
                continue
            a, b = variants[hi][key], variants[lo][key]
            kept = a['mean'] > b['mean']
            beyond = a['min'] > b['max'] or a['max'] < b['min']
            result['pairs'].append(dict(
                higher_in_paper=hi, lower_in_paper=lo,
                paper_gap=round(variants[hi]['paper_AP'] - variants[lo]['paper_AP'], 1),
                ours_gap=a['mean'] - b['mean'], order_kept=kept, beyond_seed_spread=beyond))
    pairs = result['pairs']
    result['pairs_kept_beyond_spread'] = sum(p['order_kept'] and p['beyond_seed_spread'] for p in pairs)
    result['pairs_reversed_beyond_spread'] = sum(not p['order_kept'] and p['beyond_seed_spread']
                                                 for p in pairs)
    result['pairs_kept'] = sum(p['order_kept'] for p in pairs)
    distinct = [n for n in variants if n not in ALIASES]
    result['models_finished'] = f'{len(names)} of {len(distinct)}'
    # Judged only on a finished run: with a few models tau is +-1 by construction.
    result['target_met'] = None if len(names) < len(distinct) else bool(pairs) and result['pairs_kept_beyond_spread'] == len(pairs) and (
        result['tau'] is not None and result['tau'] >= 0.6)
    return result


def summarise(args: argparse.Namespace, wall_s: float) -> Dict:
    out_dir = Path(args.out_dir).resolve()
    variants = {n: variant_result(out_dir, n, args) for n in args.variants}
    spreads = [v[k]['max'] - v[k]['min'] for v in variants.values()
               for k in ('final_AP',) if v[k] and len(v[k]['per_seed']) > 1]
    result = dict(settings=dict(conv.settings(args), seeds=args.seeds, jobs=args.jobs,
                                threads=args.threads, quick=args.quick,
                                base_config=str(BASE_CONFIG.relative_to(conv.REPO))),
                  command=' '.join(['python', 'benchmarks/ablation.py'] + sys.argv[1:]),
                  wall_s_this_invocation=round(wall_s, 1), variants=variants,
                  final_AP_seed_spread=dict(median=sorted(spreads)[len(spreads) // 2],
                                            max=max(spreads)) if spreads else None,
                  compare_final_AP=compare(variants, 'final_AP'),
                  compare_mean_AP_over_run=compare(variants, 'mean_AP_over_run'))
    sidecar = Path(str(conv.backbone_path(out_dir)) + '.json')
    if sidecar.exists():
        result['pretrain'] = json.loads(sidecar.read_text())
    return result


def plot(result: Dict, path: Path) -> None:
    """One panel per study (AP against epoch, mean over seeds) + paper AP against ours."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator
    variants = result['variants']
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    for ax, (title, names) in zip(axes.flat, GROUPS.items()):
        for i, name in enumerate(n for n in names if n in variants and variants[n]['epochs']):
            v = variants[name]
            ax.plot(v['epochs'], v['AP_mean_curve'], marker='o', ms=3, color=f'C{i}',
                    lw=2.2 if name == 'csq' else 1.4, label=f'{v["label"]} (paper {v["paper_AP"]})')
        ax.set_title(title, fontsize=10)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel('epoch')
        ax.set_ylabel('COCO bbox AP (val), mean over seeds')
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc='upper left')
    ax = axes.flat[3]
    for name, v in variants.items():
        if v['final_AP'] and name not in ALIASES:
            f = v['final_AP']
            ax.errorbar(v['paper_AP'], f['mean'], yerr=[[f['mean'] - f['min']], [f['max'] - f['mean']]],
                        fmt='o', capsize=3)
            ax.annotate(name, (v['paper_AP'], f['mean']), fontsize=7, xytext=(3, 3),
                        textcoords='offset points')
    tau = result['compare_final_AP']['tau']
    ax.set_title(f'final AP: ours (seed range) vs paper; Kendall tau = '
                 f'{"n/a" if tau is None else f"{tau:.2f}"}', fontsize=10)
    ax.set_xlabel("paper's AP (R50, 50 epochs, COCO)")
    ax.set_ylabel('our final AP')
    ax.grid(alpha=0.3)
    s = result['settings']
    fig.suptitle(f'Ablations on the convergence setting: {s["num_train"]} train images, '
                 f'{s["epochs"]} epochs, seeds {s["seeds"]}', fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def fmt(stats: Optional[Dict]) -> str:
    return '—' if not stats else f'{stats["mean"]:.3f} [{stats["min"]:.3f}, {stats["max"]:.3f}]'


def markdown_table(result: Dict) -> str:
    """Per-variant table, rank agreement and the >= 2 AP pairs."""
    out = ['| variant | decoder switch | paper AP | our final AP [seed min, max] | '
           'our mean AP over the run [min, max] | seeds done (last epoch) |',
           '| --- | --- | ---: | --- | --- | --- |']
    epochs = result['settings']['epochs']
    for name, v in result['variants'].items():
        switch = ', '.join(f'{k}={val!r}' for k, val in v['switches'].items()) or '(defaults)'
        alias = f' (= {v["trained_as"]} run)' if name in ALIASES else ''
        done = f'{len(v["complete_seeds"])}/{len(v["runs"])}'
        if len(v['complete_seeds']) < len(v['runs']):  # a partial report: how far the rest got
            done += (f' (epoch {v["epochs"][-1]} of {epochs}: mean AP {v["AP_mean_curve"][-1]:.3f})'
                     if v['epochs'] else ' (not started)')
        out.append(f'| {v["label"]}{alias} | `{switch}` | {v["paper_AP"]} | {fmt(v["final_AP"])} | '
                   f'{fmt(v["mean_AP_over_run"])} | {done} |')
    out.append('')
    spread = result['final_AP_seed_spread']
    if spread:
        out.append(f'Seed spread of the final AP (max - min over seeds): median {spread["median"]:.3f}, '
                   f'largest {spread["max"]:.3f}.')
    for key in ('compare_final_AP', 'compare_mean_AP_over_run'):
        c = result[key]
        tau = 'n/a' if c['tau'] is None else f'{c["tau"]:.2f} (p = {c["p_value"]:.3f})'
        out += ['', f'**{c["metric"]}**: Kendall tau (paper vs ours, {len(c["variants"])} distinct '
                f'models) = {tau}; pairs the paper separates by >= {GAP} AP: {len(c["pairs"])}, '
                f'order kept {c["pairs_kept"]}, kept beyond the seed spread '
                f'{c["pairs_kept_beyond_spread"]}, reversed beyond the seed spread '
                f'{c["pairs_reversed_beyond_spread"]}; target (all kept beyond spread and tau >= 0.6) '
                f'{"not assessed: " + c["models_finished"] + " models finished" if c["target_met"] is None else "met" if c["target_met"] else "NOT met"}.']
    c = result['compare_final_AP']
    if c['pairs']:
        out += ['', '| paper: higher > lower (gap) | ours (final AP gap) | order | beyond seed spread |',
                '| --- | ---: | --- | --- |']
        for p in c['pairs']:
            out.append(f'| {p["higher_in_paper"]} > {p["lower_in_paper"]} ({p["paper_gap"]}) | '
                       f'{p["ours_gap"]:+.3f} | {"kept" if p["order_kept"] else "reversed or tied"} | '
                       f'{"yes" if p["beyond_seed_spread"] else "no"} |')
    return '\n'.join(out) + '\n'


def main(argv: Optional[List[str]] = None) -> Dict:
    args = parse_args(argv)
    out_dir = Path(args.out_dir).resolve()
    register_variants(args)
    if args.train_one:
        conv.train_one(args, args.train_one[0], int(args.train_one[1]))
        return {}
    from cdetr_mmdet.data.synthetic_shapes import ensure_dataset
    data = ensure_dataset(out_dir / 'data', num_train=args.num_train, num_val=args.num_val,
                          **conv.DATA)
    print(f'[ablation] dataset {data["out_dir"]}: {data["counts"]}', flush=True)
    wall_s = 0.0
    if not args.report_only:
        import os

        import torch
        from pretrain_backbone import pretrain
        torch.set_num_threads(min(args.threads * args.jobs, os.cpu_count() or 1))  # as convergence
        pretrain(str(BASE_CONFIG), conv.backbone_path(out_dir), conv.pretrain_settings(args),
                 log=lambda m: print(m, flush=True))
        print(f'[ablation] training {args.models} x seeds {args.seeds}, {args.jobs} at a time',
              flush=True)
        start = time.perf_counter()
        models = args.models
        # Variant-major: all seeds of `chunk` variants at a time (1 with the default 2 jobs).
        chunk = max(1, args.jobs // len(args.seeds))
        for i in range(0, len(models), chunk):
            args.models = models[i:i + chunk]
            conv.run_all(args)
        args.models = models
        wall_s = time.perf_counter() - start
    result = summarise(args, wall_s)
    (out_dir / 'ablation.json').write_text(json.dumps(result, indent=1))
    plot(result, out_dir / 'ablation.png')
    table = markdown_table(result)
    (out_dir / 'ablation_table.md').write_text(table)
    print('\n' + table)
    print(f'[ablation] wrote {out_dir}/ablation.json, ablation.png, ablation_table.md '
          f'({wall_s / 60:.1f} min of training in this invocation)', flush=True)
    return result


if __name__ == '__main__':
    main()
