"""Load a repository script (``tools/...``, ``benchmarks/...``) as a module, for tests that call
its ``main`` or helpers in-process. Scripts are not a package, so they load by path."""
import importlib.util
import os.path as osp
from types import ModuleType

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def load_script(relpath: str) -> ModuleType:
    """The script at ``ROOT/relpath`` executed as a fresh module named ``<stem>_script``."""
    path = osp.join(ROOT, relpath)
    name = osp.splitext(osp.basename(path))[0] + '_script'
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
