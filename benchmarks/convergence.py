"""Convergence benchmark: our Conditional DETR vs mmdet's DETR and ConditionalDETR.

Trains the three models of ``configs/convergence/`` (identical data, backbone,
size, optimiser, schedule, batch and seed; only the transformer, head, loss and
matcher differ) with mmengine's stock ``Runner``, one subprocess per
(model, seed), and evaluates COCO AP (mmdet ``CocoMetric``) on the synthetic
val split every ``--eval-interval`` epochs. All three start from the same
backbone, pre-trained first by ``benchmarks/pretrain_backbone.py`` on an
image-level task (the paper's detectors start from ImageNet weights).
Writes ``convergence.json`` (AP, AP50, AP75 per eval point, per model and
seed, wall times, the pre-training record) and ``convergence.png`` (AP
against epoch: mean line, one thin line per seed), and prints the epochs
each model needs to reach DETR's final AP (mean over seeds).

Resumable: every run has its own work dir under ``OUT/runs/``; a finished run
(``done.json``) is skipped, an unfinished one resumes from its last checkpoint
(mmengine ``resume=True``), and the results are rebuilt from the runs'
``metrics.jsonl`` files. Re-run the same command after an interruption.

Full run (docs/convergence.md)::

    python benchmarks/convergence.py --out-dir work_dirs/convergence

CI smoke run (a handful of tiny images, 2 epochs, 1 seed)::

    python benchmarks/convergence.py --quick --out-dir /tmp/conv

Group DETR (docs/group_detr.md): ``--group-detr 3 6 11`` adds our model with
``model.group_detr=K`` for each K (runs ``ours_g3``, ...; the same config,
data, recipe and seeds as ``ours``, whose K = 1 curve it is compared with)::

    python benchmarks/convergence.py --models ours detr --group-detr 3 6 11 \
        --seeds 0 1 2 --out-dir work_dirs/convergence

With ``ours`` and some ``ours_gK`` the results also hold a ``group_detr`` block (printed and in
the markdown table; :func:`group_detr_summary`): per K the epoch reaching the K = 1 final AP,
whether it is ahead of K = 1 at every epoch from the second, the seed spread, and the best K.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from mmengine.hooks import Hook

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / 'configs' / 'convergence'
# name -> (config file, legend label); 'detr' is the reference for "epochs to reach".
MODELS = {
    'ours': ('conditional_detr_r18_shapes_d256.py', 'Conditional DETR (ours)'),
    'detr': ('detr_r18_shapes_d256.py', 'DETR (mmdet)'),
    'mmdet_cdetr': ('mmdet_conditional_detr_r18_shapes_d256.py', 'ConditionalDETR (mmdet)'),
}
COLORS = {'ours': 'tab:red', 'detr': 'tab:blue', 'mmdet_cdetr': 'tab:green'}
GROUP_COLORS = ('tab:orange', 'tab:purple', 'tab:brown', 'tab:pink', 'tab:olive')
METRICS = {'AP': 'coco/bbox_mAP', 'AP50': 'coco/bbox_mAP_50', 'AP75': 'coco/bbox_mAP_75'}
FULL = dict(num_train=1000, num_val=200, epochs=30, eval_interval=1, seeds=[0, 1], jobs=2)
QUICK = dict(num_train=8, num_val=4, epochs=2, eval_interval=1, seeds=[0], jobs=3)
# benchmarks/pretrain_backbone.py settings: its defaults for the full run, a token one for --quick.
PRETRAIN_FULL: Dict = {}
PRETRAIN_QUICK = dict(num_train=64, num_val=16, epochs=1, batch_size=16)
DATA = dict(img_size=128, min_objects=1, max_objects=3, empty_fraction=0.05, seed=0,
            difficulty='easy')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Command-line options; unset sizes take the full (or --quick) defaults."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out-dir', default=str(REPO / 'work_dirs' / 'convergence'),
                        help='data, runs, convergence.json/png (default: work_dirs/convergence)')
    parser.add_argument('--quick', action='store_true',
                        help=f'CI smoke run: {QUICK["num_train"]} train / {QUICK["num_val"]} val '
                        f'images, {QUICK["epochs"]} epochs, seed 0')
    parser.add_argument('--num-train', type=int, help=f'train images ({FULL["num_train"]})')
    parser.add_argument('--num-val', type=int, help=f'val images ({FULL["num_val"]})')
    parser.add_argument('--epochs', type=int, help=f'training epochs ({FULL["epochs"]})')
    parser.add_argument('--eval-interval', type=int,
                        help=f'evaluate every N epochs ({FULL["eval_interval"]})')
    parser.add_argument('--seeds', type=int, nargs='+', help=f'training seeds ({FULL["seeds"]})')
    parser.add_argument('--models', nargs='+', choices=list(MODELS), default=list(MODELS))
    parser.add_argument('--group-detr', type=int, nargs='+', default=[], metavar='K',
                        help='also train ours with model.group_detr=K for each K (runs ours_gK)')
    parser.add_argument('--jobs', type=int, help=f'runs trained at once ({FULL["jobs"]})')
    parser.add_argument('--threads', type=int, default=1, help='torch threads per run (1)')
    parser.add_argument('--report-only', action='store_true',
                        help='train nothing; rebuild JSON, PNG and tables from the runs so far')
    parser.add_argument('--train-one', nargs=2, metavar=('MODEL', 'SEED'), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if any(k < 2 for k in args.group_detr):
        parser.error('--group-detr: K >= 2 (K = 1 is ours)')
    args.models = list(dict.fromkeys(args.models + [f'ours_g{k}' for k in args.group_detr]))
    defaults = QUICK if args.quick else FULL
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def model_info(model: str) -> Tuple[str, str, int]:
    """(config file in ``configs/convergence/``, legend label, Group DETR K) of a run name.

    ``ours_gK`` is ``ours`` with ``model.group_detr=K``; other names are :data:`MODELS`'.
    """
    if model in MODELS:
        return (*MODELS[model], 1)
    if model.startswith('ours_g') and model[6:].isdigit():
        k = int(model[6:])
        return MODELS['ours'][0], f'Conditional DETR + Group DETR K={k} (ours)', k
    raise KeyError(f'unknown model {model!r}: {", ".join(MODELS)} or ours_gK')


def settings(args: argparse.Namespace) -> Dict:
    """Everything that defines the results; a run made with other settings is redone."""
    return dict(num_train=args.num_train, num_val=args.num_val, epochs=args.epochs,
                eval_interval=args.eval_interval, data=DATA, pretrain=pretrain_settings(args))


def pretrain_settings(args: argparse.Namespace) -> Dict:
    """Settings of the backbone pre-training (``pretrain_backbone.DEFAULTS`` + overrides)."""
    from pretrain_backbone import DEFAULTS
    return dict(DEFAULTS, **(PRETRAIN_QUICK if args.quick else PRETRAIN_FULL))


def backbone_path(out_dir: Path) -> Path:
    return out_dir / 'pretrain' / 'backbone.pth'


def run_dir(out_dir: Path, model: str, seed: int) -> Path:
    return out_dir / 'runs' / f'{model}_seed{seed}'


# ----------------------------------------------------------------------------- one run (child)
def configure_run(cfg, out_dir: Path, work_dir: Path, seed: int, epochs: int,
                  eval_interval: int) -> None:
    """Point a convergence config at the benchmark's files and set the run's schedule, in place.

    Args:
        cfg (mmengine.Config): A ``configs/convergence/`` config.
        out_dir: The benchmark's ``--out-dir`` (its ``data/`` and ``pretrain/backbone.pth``).
        work_dir: The run's work dir.
        seed: Training seed.
        epochs: Training epochs.
        eval_interval: Evaluate every this many epochs.
    """
    data_root = str(out_dir / 'data') + '/'
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = data_root
    for evaluator in ('val_evaluator', 'test_evaluator'):
        cfg[evaluator].ann_file = data_root + 'annotations/instances_val.json'
    cfg.model.backbone.init_cfg.checkpoint = str(backbone_path(out_dir))
    cfg.work_dir = str(work_dir)
    cfg.randomness = dict(seed=seed)
    cfg.train_cfg.max_epochs = epochs
    cfg.train_cfg.val_interval = eval_interval


class MetricsRecorder(Hook):
    """Appends the epoch, cumulative train seconds and ``METRICS`` after each evaluation.

    One JSON row per line of ``path`` (read back by :func:`read_rows`).

    Args:
        path: The run's ``metrics.jsonl``.
        previous_s: Train seconds of earlier invocations of a resumed run.
    """

    def __init__(self, path: Path, previous_s: float = 0.0):
        self.path, self.previous_s, self.start = path, previous_s, time.perf_counter()

    def after_val_epoch(self, runner, metrics=None):
        row = dict(epoch=runner.epoch,
                   train_s=round(self.previous_s + time.perf_counter() - self.start, 1),
                   **{k: float(metrics[v]) for k, v in METRICS.items()})
        with open(self.path, 'a') as f:
            f.write(json.dumps(row) + '\n')


def train_one(args: argparse.Namespace, model: str, seed: int) -> None:
    """Train one (model, seed) with the stock Runner, resuming if a checkpoint exists."""
    import torch
    torch.set_num_threads(args.threads)
    import cdetr_mmdet  # noqa: F401  (our modules, safe globals for resume)
    from mmengine.config import Config
    from mmengine.runner import Runner

    out_dir = Path(args.out_dir).resolve()
    work_dir = run_dir(out_dir, model, seed)
    config, _, group_detr = model_info(model)
    cfg = Config.fromfile(str(CONFIG_DIR / config))
    if group_detr > 1:
        cfg.model.group_detr = group_detr
    configure_run(cfg, out_dir, work_dir, seed, args.epochs, args.eval_interval)
    cfg.resume = True  # from work_dir/last_checkpoint if there is one, else from scratch
    if args.quick:
        cfg.default_hooks.logger.interval = 1

    metrics_file = work_dir / 'metrics.jsonl'
    rows = read_rows(metrics_file)
    runner = Runner.from_cfg(cfg)
    runner.register_hook(MetricsRecorder(metrics_file, rows[-1]['train_s'] if rows else 0.0))
    runner.train()
    (work_dir / 'done.json').write_text(json.dumps(settings(args)))


# ----------------------------------------------------------------------------- orchestration
def read_rows(path: Path) -> List[Dict]:
    """Eval rows of one run, one per epoch (a resumed run's later row wins)."""
    if not path.exists():
        return []
    by_epoch = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            by_epoch[row['epoch']] = row
    return [by_epoch[e] for e in sorted(by_epoch)]


def launch(args: argparse.Namespace, model: str, seed: int) -> subprocess.Popen:
    """Start one run in a subprocess; its output goes to the run's train.log."""
    work_dir = run_dir(Path(args.out_dir).resolve(), model, seed)
    work_dir.mkdir(parents=True, exist_ok=True)
    # benchmarks/ablation.py reuses run_all with its own script (args.script).
    script = getattr(args, 'script', None) or Path(__file__).resolve()
    cmd = [sys.executable, str(script), '--out-dir', str(args.out_dir),
           '--num-train', str(args.num_train), '--num-val', str(args.num_val),
           '--epochs', str(args.epochs), '--eval-interval', str(args.eval_interval),
           '--threads', str(args.threads), '--train-one', model, str(seed)]
    if args.quick:
        cmd.append('--quick')
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    log = open(work_dir / 'train.log', 'a')
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(REPO))


def pending_runs(args: argparse.Namespace) -> List[Tuple[str, int]]:
    """The (model, seed) runs still to train, seed-major; clears runs made with other data."""
    out_dir = Path(args.out_dir).resolve()
    todo = []
    for seed in args.seeds:  # seed-major: an early stop leaves complete seeds
        for model in args.models:
            work_dir = run_dir(out_dir, model, seed)
            done = work_dir / 'done.json'
            if done.exists():
                previous = json.loads(done.read_text())
                if any(previous.get(k) != settings(args)[k]
                       for k in ('num_train', 'num_val', 'data', 'pretrain')):
                    # Other data: this run starts again from scratch.
                    for name in ('done.json', 'metrics.jsonl', 'last_checkpoint'):
                        (work_dir / name).unlink(missing_ok=True)
                elif previous['epochs'] >= args.epochs:
                    print(f'[convergence] {model} seed {seed}: done, skipped', flush=True)
                    continue
                else:  # a longer schedule: resume from the last checkpoint
                    done.unlink()
            todo.append((model, seed))
    return todo


def run_all(args: argparse.Namespace) -> float:
    """Train every missing (model, seed), ``args.jobs`` at a time; returns the wall seconds."""
    out_dir = Path(args.out_dir).resolve()
    todo = pending_runs(args)
    start = time.perf_counter()
    running = []
    while todo or running:
        while todo and len(running) < args.jobs:
            model, seed = todo.pop(0)
            print(f'[convergence] {model} seed {seed}: training '
                  f'({run_dir(out_dir, model, seed) / "train.log"})', flush=True)
            running.append((model, seed, launch(args, model, seed)))
        time.sleep(1)
        for item in list(running):
            model, seed, proc = item
            if proc.poll() is None:
                continue
            running.remove(item)
            if proc.returncode:
                for _, _, other in running:
                    other.terminate()
                raise RuntimeError(f'{model} seed {seed} failed (exit {proc.returncode}); see '
                                   f'{run_dir(out_dir, model, seed) / "train.log"}')
            rows = read_rows(run_dir(out_dir, model, seed) / 'metrics.jsonl')
            print(f'[convergence] {model} seed {seed}: finished, final AP {rows[-1]["AP"]:.3f} '
                  f'({time.perf_counter() - start:.0f} s since start)', flush=True)
    return time.perf_counter() - start


# ----------------------------------------------------------------------------- results
def epochs_to_reach(epochs: List[int], values: List[float], target: float) -> Optional[int]:
    """First eval epoch whose value is >= target, None if never."""
    return next((e for e, v in zip(epochs, values) if v >= target), None)


def final_ap(data: Dict) -> Dict[str, float]:
    """A model's AP at its last eval epoch: mean over seeds, min and max (the spread)."""
    return {stat: data['AP'][stat][-1] for stat in ('mean', 'min', 'max')}


def group_detr_summary(models: Dict[str, Dict]) -> Optional[Dict]:
    """Group DETR against K = 1 (``ours``) on the issue's target, per K, and the best K.

    The target is ours' final mean AP. Per ``ours_gK``: the first eval epoch whose mean AP
    reaches it and its ratio to the epoch at which K = 1 reaches it; whether its mean AP is
    above K = 1's at every common eval epoch from the second (``ahead``) and the stricter
    version, its worst seed at or above K = 1's best (``ahead_beyond_spread``); its final AP
    mean [min, max]. ``target_met``: reached in at most half K = 1's epochs and ``ahead``.
    The best K reaches the target first; a tie, or no K reaching it, goes to the higher
    final mean AP.

    Args:
        models: ``summarise``'s per-model results (``epochs``, ``AP`` mean/min/max,
            ``group_detr``).

    Returns:
        dict or None: The ``group_detr`` block of convergence.json; None without an ``ours``
        curve or without an ``ours_gK`` curve.
    """
    ours = models.get('ours')
    groups = {m: d for m, d in models.items() if d['group_detr'] > 1 and d['epochs']}
    if not ours or not ours['epochs'] or not groups:
        return None
    target = ours['AP']['mean'][-1]
    # K = 1 reaches its own final mean AP at the last epoch at the latest.
    k1_epochs = epochs_to_reach(ours['epochs'], ours['AP']['mean'], target)

    def ap(data: Dict, stat: str, epoch: int) -> float:
        return data['AP'][stat][data['epochs'].index(epoch)]

    per_k = {}
    for model, data in groups.items():
        reach = epochs_to_reach(data['epochs'], data['AP']['mean'], target)
        compared = [e for e in data['epochs'] if e >= 2 and e in ours['epochs']]
        behind = [e for e in compared if not ap(data, 'mean', e) > ap(ours, 'mean', e)]
        overlap = [e for e in compared if not ap(data, 'min', e) >= ap(ours, 'max', e)]
        ahead = not behind if compared else None  # nothing to compare: no verdict
        per_k[model] = dict(
            k=data['group_detr'], epochs_to_target=reach,
            ratio_to_k1=reach / k1_epochs if reach is not None else None,
            compared_epochs=compared, ahead=ahead, behind_epochs=behind,
            ahead_beyond_spread=not overlap if compared else None,
            spread_overlap_epochs=overlap,
            target_met=reach is not None and reach <= k1_epochs / 2 and ahead is True,
            final_epoch=data['epochs'][-1], final_AP=final_ap(data))
    best = min(per_k, key=lambda m: (per_k[m]['epochs_to_target'] is None,
                                     per_k[m]['epochs_to_target'] or 0,
                                     -per_k[m]['final_AP']['mean']))
    return dict(metric='AP', target=target,
                k1=dict(model='ours', epochs_to_target=k1_epochs,
                        final_epoch=ours['epochs'][-1], final_AP=final_ap(ours)),
                groups=per_k, best=best, best_k=per_k[best]['k'],
                target_met=per_k[best]['target_met'])


def summarise(args: argparse.Namespace, wall_s: float) -> Dict:
    """Collect every run's eval rows into the results dict written as convergence.json."""
    out_dir = Path(args.out_dir).resolve()
    models = {}
    for model in args.models:
        runs = {str(s): [r for r in read_rows(run_dir(out_dir, model, s) / 'metrics.jsonl')
                         if r['epoch'] <= args.epochs] for s in args.seeds}
        epochs = sorted(set.intersection(*(set(r['epoch'] for r in rows) for rows in runs.values())))
        per_epoch = {str(s): {r['epoch']: r for r in rows} for s, rows in runs.items()}
        stats = {}
        for key in METRICS:
            values = [[per_epoch[s][e][key] for s in per_epoch] for e in epochs]
            stats[key] = dict(mean=[sum(v) / len(v) for v in values],
                              min=[min(v) for v in values], max=[max(v) for v in values])
        config, label, group_detr = model_info(model)
        models[model] = dict(label=label, config=f'configs/convergence/{config}', group_detr=group_detr,
                             epochs=epochs, runs=runs, **stats,
                             train_s={s: rows[-1]['train_s'] if rows else None
                                      for s, rows in runs.items()})
    result = dict(settings=dict(settings(args), seeds=args.seeds, jobs=args.jobs,
                                threads=args.threads, quick=args.quick),
                  command=' '.join(['python', 'benchmarks/convergence.py'] + sys.argv[1:]),
                  wall_s_this_invocation=round(wall_s, 1), models=models)
    sidecar = Path(str(backbone_path(out_dir)) + '.json')
    if sidecar.exists():  # the shared backbone's pre-training: settings, accuracy, seconds
        result['pretrain'] = json.loads(sidecar.read_text())
    if 'detr' in models and models['detr']['epochs']:
        # 'reach' (AP) is the benchmark's criterion; 'reach_AP50' is the same on AP50.
        for name, key in (('reach', 'AP'), ('reach_AP50', 'AP50')):
            target = models['detr'][key]['mean'][-1]
            reach = {m: epochs_to_reach(d['epochs'], d[key]['mean'], target)
                     for m, d in models.items()}
            ratio = (reach['detr'] / reach['ours']
                     if 'ours' in reach and reach['ours'] and reach['detr'] else None)
            result[name] = dict(metric=key, target=target, epochs=reach,
                                ratio_detr_over_ours=ratio)
    if 'ours' in models and 'mmdet_cdetr' in models:
        ours, ref = models['ours']['AP'], models['mmdet_cdetr']['AP']
        # "Matches within the seed spread": our best seed reaches mmdet's worst seed.
        result['ours_matches_mmdet_cdetr'] = [o >= r for o, r in zip(ours['max'], ref['min'])]
    group_detr = group_detr_summary(models)  # with or without DETR
    if group_detr is not None:
        result['group_detr'] = group_detr
    return result


def plot(result: Dict, path: Path) -> None:
    """AP and AP50 against epoch: mean line per model, thin line per seed."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key in zip(axes, ('AP', 'AP50')):
        for model, data in result['models'].items():
            color = COLORS.get(model) or GROUP_COLORS[
                sorted(result['models']).index(model) % len(GROUP_COLORS)]
            for rows in data['runs'].values():
                ax.plot([r['epoch'] for r in rows], [r[key] for r in rows], color=color,
                        lw=0.7, alpha=0.45)
            ax.plot(data['epochs'], data[key]['mean'], color=color, lw=2.2, marker='o', ms=3,
                    label=data['label'])
        if key == 'AP' and 'reach' in result:
            ax.axhline(result['reach']['target'], color='gray', ls='--', lw=1,
                       label="DETR's final AP")
        elif key == 'AP' and 'group_detr' in result:
            ax.axhline(result['group_detr']['target'], color='gray', ls='--', lw=1,
                       label='K = 1 final AP')
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel('epoch')
        ax.set_ylabel(f'COCO bbox {key} (val)')
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc='upper left')
    s = result['settings']
    fig.suptitle(f'Synthetic shapes, pre-trained backbone: {s["num_train"]} train images, '
                 f'seeds {s["seeds"]} (thin: per seed, thick: mean)', fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def spread(values: Dict[str, float]) -> str:
    """'mean [min, max]' of a ``final_ap`` dict."""
    return f'{values["mean"]:.3f} [{values["min"]:.3f}, {values["max"]:.3f}]'


def verdict(flag: Optional[bool], exceptions: List[int]) -> str:
    """'yes', 'no (epochs ...)' naming the epochs where it fails, or 'n/a'."""
    if flag is None:
        return 'n/a (no common eval epoch from the 2nd)'
    return 'yes' if flag else 'no (epochs ' + ', '.join(map(str, exceptions)) + ')'


def reached(entry: Dict) -> str:
    """Epoch at which a K reaches the target, with its ratio to K = 1's epoch if it has one."""
    epoch, ratio = entry['epochs_to_target'], entry.get('ratio_to_k1')
    if epoch is None:
        return 'not reached'
    return f'epoch {epoch}' + (f' ({ratio:.2f} x K = 1\'s)' if ratio is not None else '')


def report_group_detr(summary: Dict) -> None:
    """Print the ``group_detr`` block: per K against K = 1, the best K, the issue's target."""
    k1 = summary['k1']
    print(f'\nGroup DETR against K = 1 (target: K = 1 final AP {summary["target"]:.3f} at epoch '
          f'{k1["final_epoch"]}, first reached at epoch {k1["epochs_to_target"]}; mean over '
          'seeds):')
    for entry in summary['groups'].values():
        print(f'  K = {entry["k"]}: target {reached(entry)}; ahead of K = 1 at '
              f'every epoch from the 2nd: {verdict(entry["ahead"], entry["behind_epochs"])}; '
              'worst seed >= K = 1\'s best: '
              f'{verdict(entry["ahead_beyond_spread"], entry["spread_overlap_epochs"])}; '
              f'final AP {spread(entry["final_AP"])} (epoch {entry["final_epoch"]})')
    print(f'  best K: {summary["best_k"]}; the issue\'s target (the K = 1 final AP in at most '
          'half the epochs, ahead at every epoch from the 2nd): '
          f'{"met" if summary["target_met"] else "not met"}')
    if summary['target'] <= 0:
        print('  (the K = 1 final AP is 0: every K "reaches" it at once; the epochs say nothing)')


def group_detr_markdown(summary: Dict) -> List[str]:
    """The ``group_detr`` block as a markdown table (K = 1 first) and the verdict."""
    k1 = summary['k1']
    out = [f'**Group DETR against K = 1** (target: K = 1 final AP {summary["target"]:.3f}, '
           'mean over seeds)', '',
           '| K | target reached at | ahead at every epoch from the 2nd (mean) | '
           'worst seed >= K = 1\'s best | final AP mean [min, max] |',
           '| ---: | --- | --- | --- | --- |',
           f'| 1 | {reached(k1)} | | | {spread(k1["final_AP"])} |']
    for entry in summary['groups'].values():
        out.append(f'| {entry["k"]} | {reached(entry)} | '
                   f'{verdict(entry["ahead"], entry["behind_epochs"])} | '
                   f'{verdict(entry["ahead_beyond_spread"], entry["spread_overlap_epochs"])} | '
                   f'{spread(entry["final_AP"])} |')
    out += ['', f'Best K: {summary["best_k"]}. The issue\'s target (the best K reaches the K = 1 '
            'final AP in at most half the epochs and is ahead at every epoch from the second): '
            f'**{"met" if summary["target_met"] else "not met"}**.', '']
    return out


def report(result: Dict) -> None:
    """Print the table, epochs to reach DETR's final AP and the ratio."""
    for model, data in result['models'].items():
        print(f'\n{data["label"]}  (train s per seed: {data["train_s"]})')
        for i, epoch in enumerate(data['epochs']):
            cells = '  '.join(f'{k} {data[k]["mean"][i]:.3f} [{data[k]["min"][i]:.3f}, '
                              f'{data[k]["max"][i]:.3f}]' for k in METRICS)
            print(f'  epoch {epoch:3d}: {cells}')
    for name in ('reach', 'reach_AP50'):
        if name not in result:
            continue
        reach = result[name]
        print(f'\nepochs to reach {reach["metric"]} {reach["target"]:.3f} '
              f'(DETR final {reach["metric"]}, mean over seeds):')
        for model, epochs in reach['epochs'].items():
            print(f'  {result["models"][model]["label"]}: '
                  f'{epochs if epochs is not None else "not reached"}')
        ratio = reach['ratio_detr_over_ours']
        print(f'  ratio DETR / ours: {ratio:.2f}' if ratio else '  ratio DETR / ours: n/a')
        if reach['target'] <= 0:
            print(f'  (DETR\'s final {reach["metric"]} is 0: every model "reaches" it at once; '
                  'the ratio says nothing)')
    if 'ours_matches_mmdet_cdetr' in result:
        print(f'ours >= mmdet ConditionalDETR within the seed spread at each eval point: '
              f'{result["ours_matches_mmdet_cdetr"]}')
    if 'group_detr' in result:
        report_group_detr(result['group_detr'])


def markdown_table(result: Dict) -> str:
    """One table per metric: rows are eval epochs, cells mean over seeds [min, max]."""
    models = result['models']
    epochs = sorted(set().union(*(d['epochs'] for d in models.values())))
    out = []
    for key in METRICS:
        out += [f'**{key}** (mean over seeds [min, max])', '',
                '| epoch | ' + ' | '.join(d['label'] for d in models.values()) + ' |',
                '| ---: | ' + ' | '.join('---' for _ in models) + ' |']
        for epoch in epochs:
            cells = []
            for data in models.values():
                i = data['epochs'].index(epoch) if epoch in data['epochs'] else None
                cells.append('' if i is None else f'{data[key]["mean"][i]:.3f} '
                             f'[{data[key]["min"][i]:.3f}, {data[key]["max"][i]:.3f}]')
            out.append(f'| {epoch} | ' + ' | '.join(cells) + ' |')
        out.append('')
    if 'group_detr' in result:
        out += group_detr_markdown(result['group_detr'])
    return '\n'.join(out)


def main(argv: Optional[List[str]] = None) -> Dict:
    args = parse_args(argv)
    if args.train_one:
        train_one(args, args.train_one[0], int(args.train_one[1]))
        return {}
    out_dir = Path(args.out_dir).resolve()
    from cdetr_mmdet.data.synthetic_shapes import ensure_dataset
    data = ensure_dataset(out_dir / 'data', num_train=args.num_train, num_val=args.num_val,
                          **DATA)
    print(f'[convergence] dataset {data["out_dir"]}: {data["counts"]}', flush=True)
    if not args.report_only:
        import torch
        from pretrain_backbone import pretrain
        # The machine share the runs will use, before they start.
        torch.set_num_threads(min(args.threads * args.jobs, os.cpu_count() or 1))
        pretrained = pretrain(str(CONFIG_DIR / MODELS['ours'][0]), backbone_path(out_dir),
                              pretrain_settings(args), log=lambda m: print(m, flush=True))
        print(f'[convergence] backbone pre-trained: {pretrained["history"][-1]}', flush=True)
    wall_s = 0.0 if args.report_only else run_all(args)
    result = summarise(args, wall_s)
    (out_dir / 'convergence.json').write_text(json.dumps(result, indent=1))
    plot(result, out_dir / 'convergence.png')
    (out_dir / 'convergence_table.md').write_text(markdown_table(result))
    report(result)
    print(f'\n[convergence] wrote {out_dir / "convergence.json"} and {out_dir / "convergence.png"} '
          f'({wall_s / 60:.1f} min of training in this invocation)')
    return result


if __name__ == '__main__':
    main()
