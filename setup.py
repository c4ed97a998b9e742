"""Packaging for mmvitscale.

Metadata and requirements live in setup.cfg. This file only adds:

* what mim needs: configs, tools and model-index.yml visible under ``mmvitscale/.mim/``, the way
  mmpretrain ships them. In-tree (editable / develop installs) ``.mim`` holds symlinks to the
  top-level folders; when a wheel or sdist is built they are replaced by copies so the installed
  package is self-contained.
* ``mmvitscale-mmengine-hook.pth`` in site-packages, which imports the tiny top-level module
  ``mmvitscale_mmengine_hook`` at interpreter start so that mmengine accepts
  ``_base_ = 'mmvitscale::...'`` in any process (stock host train scripts included). Wheels
  carry it at their root (``build_py``); ``setup.py develop`` (``pip install -e`` with
  ``--no-use-pep517``) writes it next to the egg-link and removes it on ``develop --uninstall``;
  PEP 660 editable wheels (``pip install -e .``) get it where setuptools offers the hook for it.
"""
import os
import os.path as osp
import shutil
import sys

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.develop import develop

try:
    from setuptools.command.editable_wheel import editable_wheel
except ImportError:  # pragma: no cover - setuptools < 64 has no PEP 660 editable wheels
    editable_wheel = None

HERE = osp.dirname(osp.abspath(__file__))
MIM_FILES = ('configs', 'tools', 'model-index.yml')
HOOK_PTH = 'mmvitscale-mmengine-hook.pth'
# One ``import`` line (site.py executes those). Guarded: after ``pip uninstall`` of a develop
# install the .pth may outlive the module; then it must stay silent. The name sorts after
# ``easy-install.pth`` and ``__editable__*.pth``, which put the module on sys.path first.
HOOK_PTH_LINE = ('import sys; exec("try:\\n import mmvitscale_mmengine_hook\\n'
                 'except ImportError:\\n pass")\n')


def add_mim_extension() -> None:
    """Populate ``mmvitscale/.mim`` with symlinks (editable) or copies (builds)."""
    build_cmds = {'bdist_wheel', 'sdist', 'build', 'build_py', 'install'}
    copy = bool(build_cmds.intersection(sys.argv[1:]))
    mim_dir = osp.join(HERE, 'mmvitscale', '.mim')
    os.makedirs(mim_dir, exist_ok=True)
    for name in MIM_FILES:
        src = osp.join(HERE, name)
        dst = osp.join(mim_dir, name)
        if not osp.exists(src):
            continue
        if osp.islink(dst) or osp.isfile(dst):
            os.remove(dst)
        elif osp.isdir(dst):
            shutil.rmtree(dst)
        if copy:
            if osp.isdir(src):
                shutil.copytree(src, dst, ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
            else:
                shutil.copyfile(src, dst)
        else:
            os.symlink(osp.relpath(src, mim_dir), dst)


class BuildPyWithHook(build_py):
    """``build_py`` that also puts the hook ``.pth`` at the root of the build (wheel) tree."""

    def run(self) -> None:
        super().run()
        target = osp.join(self.build_lib, HOOK_PTH)
        self.mkpath(self.build_lib)
        with open(target, 'w', encoding='utf-8') as f:
            f.write(HOOK_PTH_LINE)

    def get_outputs(self, include_bytecode: bool = True) -> list:
        return super().get_outputs(include_bytecode) + [osp.join(self.build_lib, HOOK_PTH)]


class DevelopWithHook(develop):
    """``setup.py develop`` that also installs (``--uninstall``: removes) the hook ``.pth``."""

    def run(self) -> None:
        super().run()
        target = osp.join(self.install_dir, HOOK_PTH)
        if self.uninstall:
            if osp.isfile(target) and not self.dry_run:
                os.remove(target)
        elif not self.dry_run:
            with open(target, 'w', encoding='utf-8') as f:
                f.write(HOOK_PTH_LINE)


class _StrategyWithHook:
    """Wraps a setuptools editable strategy: writes its files, then the hook ``.pth``."""

    def __init__(self, strategy) -> None:
        self._strategy = strategy

    def __call__(self, wheel, files, mapping) -> None:
        self._strategy(wheel, files, mapping)
        wheel.writestr(HOOK_PTH, HOOK_PTH_LINE)

    def __enter__(self):
        self._strategy.__enter__()
        return self

    def __exit__(self, *exc):
        return self._strategy.__exit__(*exc)


def cmdclass() -> dict:
    """The commands above; the PEP 660 one only where setuptools has ``_select_strategy``."""
    commands = {'build_py': BuildPyWithHook, 'develop': DevelopWithHook}
    if editable_wheel is not None and hasattr(editable_wheel, '_select_strategy'):

        class EditableWheelWithHook(editable_wheel):
            """PEP 660 editable wheel that also carries the hook ``.pth``."""

            def _select_strategy(self, *args, **kwargs):
                return _StrategyWithHook(super()._select_strategy(*args, **kwargs))

        commands['editable_wheel'] = EditableWheelWithHook
    return commands


if __name__ == '__main__':
    add_mim_extension()
    setup(cmdclass=cmdclass())
