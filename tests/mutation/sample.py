"""The seeded, per-file sample of mutmut mutants of ``cdetr_mmdet/models/``.

Run in mutmut's scratch copy (docs/testing.md, "Mutation testing") after
``mutmut run`` has generated the mutants (``mutants/**/*.py.meta``)::

    python tests/mutation/sample.py names     # the sampled names, one a line
    python tests/mutation/sample.py names --files attention.py decoder.py
    mutmut run $(python tests/mutation/sample.py names)
    python tests/mutation/sample.py score     # per-file score, 95 % intervals

Running every mutant takes hours on two shared cores; a sample stratified by
file (more mutants of the paper's logic) with a fixed seed is reproducible,
and its score comes with Clopper-Pearson intervals. ``--equivalent`` names
the survivors judged equivalent (no observable change), which ``score``
leaves out of the denominator.
"""
import argparse
import json
import random
import sys
from pathlib import Path
from typing import Dict, List

from mutmut.stats import status_by_exit_code
from scipy.stats import beta

SEED = 23  # issue 23
# Mutants drawn per file of cdetr_mmdet/models/ (all of them when fewer).
SAMPLE_SIZES = {
    'attention.py': 35, 'decoder.py': 60, 'transformer.py': 50,
    'variants/reference_points.py': 15, 'variants/spatial_queries.py': 12,
    'variants/transforms.py': 20, 'head.py': 25, 'matcher.py': 20,
    'detector.py': 20, 'frozen_bn.py': 15, 'dc5_resnet.py': 15,
}
# mutmut's statuses: a timeout or a crash is the tests stopping the mutant;
# a mutant no selected test reaches ("no tests") counts as a survivor.
KILLED = {'killed', 'timeout', 'segfault', 'caught by type check'}
SURVIVED = {'survived', 'no tests'}


def load_meta(root: Path) -> Dict[str, dict]:
    """Each mutated file's ``exit_code_by_key``, by path under models/."""
    models = root / 'mutants' / 'cdetr_mmdet' / 'models'
    if not models.is_dir():
        sys.exit(f'{models} not found: run this in mutmut\'s scratch copy '
                 'after `mutmut run` has generated the mutants')
    return {name: json.loads((models / f'{name}.meta').read_text())[
        'exit_code_by_key'] for name in SAMPLE_SIZES
        if (models / f'{name}.meta').is_file()}


def sample(meta: Dict[str, dict]) -> Dict[str, List[str]]:
    """The seeded sample, per file, in mutmut's (sorted) name order."""
    rng = random.Random(SEED)
    drawn = {}
    for name, size in SAMPLE_SIZES.items():
        names = sorted(meta.get(name, {}))
        drawn[name] = sorted(rng.sample(names, min(size, len(names))))
    return drawn


def interval(killed: int, total: int) -> str:
    """The Clopper-Pearson 95 % interval of killed / total, in percent."""
    if total == 0:
        return 'n/a'
    low = beta.ppf(0.025, killed, total - killed + 1) if killed else 0.
    high = beta.ppf(0.975, killed + 1, total - killed) if killed < total \
        else 1.
    return f'{100 * low:.0f}-{100 * high:.0f} %'


def score(meta: Dict[str, dict], drawn: Dict[str, List[str]],
          equivalent: List[str]) -> None:
    """Print killed / survived / not run per file and overall."""
    rows, totals = [], [0, 0, 0, 0]
    for name, names in drawn.items():
        codes = [status_by_exit_code[meta[name][n]] for n in names
                 if n not in equivalent]
        killed = sum(c in KILLED for c in codes)
        survived = [n for n in names if n not in equivalent and
                    status_by_exit_code[meta[name][n]] in SURVIVED]
        other = len(codes) - killed - len(survived)
        eq = len(names) - len(codes)
        for i, v in enumerate((killed, len(survived), other, eq)):
            totals[i] += v
        rows.append((name, killed, len(survived), other, eq, survived))
    print('| file | sampled | killed | survived | not run | equivalent | '
          'score of those run (95 % CI) |')
    print('| --- | --- | --- | --- | --- | --- | --- |')
    for name, k, s, o, e, _ in rows:
        print(f'| `{name}` | {k + s + o + e} | {k} | {s} | {o} | {e} | '
              + (f'{100 * k / (k + s):.0f} % ({interval(k, k + s)}) |'
                 if k + s else 'none run |'))
    k, s, o, e = totals
    print(f'| **all** | {k + s + o + e} | {k} | {s} | {o} | {e} | '
          f'**{100 * k / max(k + s, 1):.1f} %** ({interval(k, k + s)}) |')
    for name, *_, survived in rows:
        for n in survived:
            print('survived:', n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('what', choices=('names', 'score'))
    parser.add_argument('--root', type=Path, default=Path('.'),
                        help="mutmut's scratch copy (default: here)")
    parser.add_argument('--equivalent', type=Path,
                        help='a file of survivors judged equivalent, one '
                        'mutant name a line (# comments allowed)')
    parser.add_argument('--files', nargs='+', metavar='FILE',
                        choices=sorted(SAMPLE_SIZES),
                        help='only these files of models/ (default: all)')
    args = parser.parse_args()
    meta = load_meta(args.root)
    drawn = sample(meta)
    if args.files:
        drawn = {name: drawn[name] for name in args.files}
    if args.what == 'names':
        print('\n'.join(n for names in drawn.values() for n in names))
        return
    equivalent = []
    if args.equivalent:
        equivalent = [line.split('#')[0].strip() for line in
                      args.equivalent.read_text().splitlines()
                      if line.split('#')[0].strip()]
    score(meta, drawn, equivalent)


if __name__ == '__main__':
    main()
