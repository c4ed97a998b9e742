"""Under CI=true a skipped test (missing dependency or data) fails the run."""
import os.path as osp

import pytest

CONFTEST = osp.join(osp.dirname(__file__), 'conftest.py')


@pytest.mark.parametrize('ci,outcome', [('true', dict(failed=2)), ('', dict(skipped=2))])
def test_skips_fail_in_ci(pytester, monkeypatch, ci, outcome):
    with open(CONFTEST) as f:
        pytester.makeconftest(f.read())
    pytester.makepyfile(test_probe='''
import pytest

def test_needs_a_dependency():
    pytest.importorskip('a_module_that_does_not_exist_here')

def test_needs_data():
    pytest.skip('Fashion-MNIST files absent')
''')
    monkeypatch.setenv('CI', ci)
    result = pytester.runpytest_subprocess('-q', '-p', 'no:cacheprovider')
    result.assert_outcomes(**outcome)
    if ci:
        result.stdout.fnmatch_lines(['*skipped under CI=true*'])
