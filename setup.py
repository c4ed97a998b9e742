"""Packaging for mmvitscale.

Metadata and requirements live in setup.cfg. This file only adds what mim needs: configs,
tools and model-index.yml visible under ``mmvitscale/.mim/``, the way mmpretrain ships them.
In-tree (editable / develop installs) ``.mim`` holds symlinks to the top-level folders; when a
wheel or sdist is built they are replaced by copies so the installed package is self-contained.
"""
import os
import os.path as osp
import shutil
import sys

from setuptools import setup

HERE = osp.dirname(osp.abspath(__file__))
MIM_FILES = ('configs', 'tools', 'model-index.yml')


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


if __name__ == '__main__':
    add_mim_extension()
    setup()
