import os

import pytest
import torch

import mmvitscale  # noqa: F401  (shims first, as every entry point does)

torch.set_num_threads(min(2, os.cpu_count() or 1))

TINY = dict(embed_dims=32, num_layers=2, num_heads=2, mlp_ratio=2.0)
pytest_plugins = ['pytester']
IN_CI = os.environ.get('CI', '').lower() in ('1', 'true', 'yes')


@pytest.fixture(scope='session')
def fmnist_data_root(tmp_path_factory):
    """A study data root holding Fashion-MNIST laid out for mmpretrain (``fashion_mnist/``),
    prepared once per session from the Debian package; skipped (a failure under ``CI=true``,
    see below) when the package is absent."""
    from mmvitscale import datasets
    try:
        datasets.source_dir()
    except datasets.FashionMNISTNotFoundError as err:
        pytest.skip(str(err))
    root = tmp_path_factory.mktemp('fmnist') / 'data'
    datasets.prepare_classification(str(root / 'fashion_mnist'))
    return root


@pytest.fixture
def tiny_arch():
    return dict(TINY)


@pytest.fixture(scope='module')
def one_thread():
    """torch on one thread for a module's tests (tiny models: a second thread only adds
    synchronisation, costly on a shared machine); the count is restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _fail_skip_in_ci(report) -> None:
    """In CI a skip (missing dependency, data package, daemon...) is a failure, never silent."""
    if IN_CI and report.skipped and not hasattr(report, 'wasxfail'):
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = 'failed'
        report.longrepr = f'skipped under CI=true, which must not happen: {reason}'


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_skip_in_ci(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _fail_skip_in_ci(outcome.get_result())
