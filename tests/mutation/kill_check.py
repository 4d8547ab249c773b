"""Run given tests against named mutmut mutants, one forked child each.

    python tests/mutation/kill_check.py MUTANTS_DIR REPO_DIR 'NAME::tests/test_x.py::test_y[,...]' ...

MUTANTS_DIR is mutmut's trampolined copy (`mutants/`, imported once); each
child sets MUTANT_UNDER_TEST=NAME, as mutmut's runner does, and runs the
tests of REPO_DIR. An empty NAME is the clean code, `fail` mutmut's sanity
mutant. Prints KILLED / SURVIVES per line (docs/testing.md).
"""
import os
import sys

mutants_dir, tests_dir = sys.argv[1], sys.argv[2]
sys.path.insert(0, mutants_dir)
os.environ['MUTANT_UNDER_TEST'] = ''
import torch  # noqa: E402,F401
import mmdet  # noqa: E402,F401
import cdetr_mmdet  # noqa: E402,F401  (the trampolined copy)
import pytest  # noqa: E402
assert cdetr_mmdet.__file__.startswith(mutants_dir), cdetr_mmdet.__file__
os.chdir(tests_dir)
for spec in sys.argv[3:]:
    mutant, tests = spec.split('::', 1)
    nodes = [t if t.startswith('tests/') else 'tests/' + t
             for t in tests.split(',')]
    pid = os.fork()
    if pid == 0:
        os.environ['MUTANT_UNDER_TEST'] = mutant
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        os._exit(pytest.main(['-q', '-x', '-p', 'no:cacheprovider'] + nodes))
    _, status = os.waitpid(pid, 0)
    rc = os.waitstatus_to_exitcode(status)
    print(f"{'SURVIVES' if rc == 0 else f'KILLED(rc={rc})'} "
          f"{mutant or '<clean>'} by {','.join(nodes)}", flush=True)
