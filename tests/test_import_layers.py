"""The package's import layers (docs/architecture.md): no import circle, nothing upward, no
private (``_name``) imported across modules; tools and benchmarks import the package, never
``tests/``, and never edit ``sys.path``.

The graph is read from the source with ``ast`` (nothing is imported): every ``import`` and
``from ... import`` of an ``mmvitscale`` module counts, at module level or inside a function.
``python tests/test_import_layers.py`` prints the picture of the imports between the
package's parts (Mermaid) for docs/architecture.md.
"""
import ast
import functools
import sys
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / 'mmvitscale'

# The layer map of docs/architecture.md (change both together): a module's floor is that of
# the longest prefix here. A module may import only from its own floor or the floors below.
FLOORS: Dict[str, int] = {
    'mmvitscale.scaling': 1, 'mmvitscale.stats': 1, 'mmvitscale.fileio': 1,
    'mmvitscale.errors': 1, 'mmvitscale.registry': 1, 'mmvitscale.version': 1,
    'mmvitscale': 2,  # the package's __init__ (imports compat)
    'mmvitscale.compat': 2, 'mmvitscale.families': 2, 'mmvitscale.rules': 2,
    'mmvitscale.models': 2, 'mmvitscale.checkpoint': 2, 'mmvitscale.datasets': 2,
    'mmvitscale.cost': 3,
    'mmvitscale.search': 4,
    'mmvitscale.engine': 5,
    'mmvitscale.experiments': 6,
}
FLOOR_NAMES = {1: 'floor 1: pure data', 2: 'floor 2: models, checkpoints, data', 3: 'cost',
               4: 'search', 5: 'engine', 6: 'experiments'}

# Violations another change in flight removes; each names its issue. Remove an entry when it
# is fixed (it then no longer hides anything); empty when none remain.
KNOWN_CIRCLES: Set[Tuple[str, ...]] = set()
KNOWN_UPWARD: Set[Tuple[str, str]] = set()
KNOWN_LONG: Set[str] = set()
KNOWN_PRIVATE: Set[Tuple[str, str]] = set()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix('').parts)
    if parts[-1] == '__init__':
        parts = parts[:-1]
    return '.'.join(parts)


def imported_modules(path: Path, modules: Set[str]) -> Set[str]:
    """The ``mmvitscale`` modules ``path`` imports anywhere in its code (``from m import x``
    counts as importing ``m.x`` when that is a module, else ``m``)."""
    name = module_name(path)
    package = name if path.name == '__init__.py' else name.rpartition('.')[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split('.')[:len(package.split('.')) - node.level + 1]
                mod = '.'.join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ''
            for a in node.names:
                found.add(f'{mod}.{a.name}' if f'{mod}.{a.name}' in modules else mod)
    out = set()
    for mod in found:
        if mod.split('.')[0] != 'mmvitscale':
            continue
        while mod not in modules and '.' in mod:
            mod = mod.rpartition('.')[0]
        if mod in modules and mod != name:
            out.add(mod)
    return out


@functools.lru_cache(maxsize=None)
def import_graph() -> Dict[str, Set[str]]:
    files = {module_name(p): p for p in PKG.rglob('*.py')}
    return {m: imported_modules(p, set(files)) for m, p in files.items()}


def floor_of(module: str) -> Optional[int]:
    parts = module.split('.')
    for i in range(len(parts), 0, -1):
        if '.'.join(parts[:i]) in FLOORS:
            return FLOORS['.'.join(parts[:i])]
    return None


def circles(graph: Dict[str, Set[str]]) -> List[Tuple[str, ...]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    out: List[Tuple[str, ...]] = []
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(tuple(sorted(comp)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def upward(graph: Dict[str, Set[str]]) -> List[Tuple[str, str]]:
    return sorted((a, b) for a, deps in graph.items() for b in deps
                  if floor_of(a) is not None and floor_of(b) is not None
                  and floor_of(b) > floor_of(a))


def test_every_module_has_a_floor():
    missing = sorted(m for m in import_graph() if floor_of(m) is None)
    assert not missing, f'add these modules to FLOORS and docs/architecture.md: {missing}'


def test_no_import_circle():
    found = set(circles(import_graph()))
    assert found - KNOWN_CIRCLES == set(), 'import circles: %s' % sorted(found - KNOWN_CIRCLES)


def test_no_upward_import():
    found = set(upward(import_graph()))
    new = sorted(found - KNOWN_UPWARD)
    assert not new, 'upward imports (floor %s):\n' % FLOORS + '\n'.join(
        f'{a} (floor {floor_of(a)}) imports {b} (floor {floor_of(b)})' for a, b in new)


def private_imports(path: Path, modules: Set[str]) -> Set[Tuple[str, str]]:
    """``(importer, module._name)`` for each private name ``path`` imports from another
    ``mmvitscale`` module (``from m import _x``; dunders are not private)."""
    name = module_name(path)
    package = name if path.name == '__init__.py' else name.rpartition('.')[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'), str(path))):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = package.split('.')[:len(package.split('.')) - node.level + 1]
            mod = '.'.join(base + ([node.module] if node.module else []))
        else:
            mod = node.module or ''
        if mod.split('.')[0] != 'mmvitscale' or mod == name:
            continue
        out.update((name, f'{mod}.{a.name}') for a in node.names
                   if a.name.startswith('_') and not a.name.startswith('__'))
    return out


def test_no_private_name_imported_across_modules():
    files = [*PKG.rglob('*.py'), *(ROOT / 'tools').rglob('*.py'),
             *(ROOT / 'benchmarks').rglob('*.py')]
    mods = set(import_graph())
    found = set().union(*(private_imports(p, mods) for p in files))
    new = sorted(found - KNOWN_PRIVATE)
    assert not new, 'private names imported across modules (make them public or move the ' \
        'code): %s' % new


def test_the_checks_see_a_circle_and_an_upward_import(tmp_path):
    """The detectors on a small graph: a -> b -> c -> a is one circle, search -> experiments
    is upward, and function-level imports count."""
    graph = {'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}
    assert circles(graph) == [('a', 'b', 'c')]
    assert upward({'mmvitscale.search.x': {'mmvitscale.experiments.y'},
                   'mmvitscale.experiments.y': {'mmvitscale.search.x'}}) == [
                       ('mmvitscale.search.x', 'mmvitscale.experiments.y')]
    src = PKG / 'search' / 'rule_search.py'
    mods = set(import_graph())
    assert 'mmvitscale.families' in imported_modules(src, mods)
    fake = tmp_path / 'mmvitscale' / 'search' / 'late.py'
    fake.parent.mkdir(parents=True)
    fake.write_text('def f():\n    from ..experiments import stats\n')
    global ROOT
    old, ROOT = ROOT, tmp_path
    try:
        assert imported_modules(fake, mods) == {'mmvitscale.experiments.stats'}
    finally:
        ROOT = old


def script_problems(path: Path) -> List[str]:
    """What a tool or benchmark script does that it must not: edit ``sys.path``, import from
    ``tests``, ``tools`` or ``benchmarks``."""
    problems = []
    for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'), str(path))):
        if isinstance(node, ast.Attribute) and node.attr == 'path' and isinstance(
                node.value, ast.Name) and node.value.id == 'sys':
            problems.append(f'line {node.lineno}: uses sys.path')
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names = [node.module]
        elif isinstance(node, ast.ImportFrom) and node.level:
            names = ['.' * node.level + (node.module or '')]
        for n in names:
            if n.split('.')[0] in ('tests', 'tools', 'benchmarks', 'conftest', 'scripts') \
                    or n.startswith('.'):
                problems.append(f'line {node.lineno}: imports {n}')
    return problems


@pytest.mark.parametrize('folder', ['tools', 'benchmarks'])
def test_scripts_import_only_the_package(folder):
    bad = {p.relative_to(ROOT).as_posix(): script_problems(p)
           for p in sorted((ROOT / folder).rglob('*.py'))}
    bad = {k: v for k, v in bad.items() if v}
    assert not bad, bad


def test_tools_are_thin():
    """A tool parses flags, calls the package and prints: at most 150 lines."""
    long = {p.relative_to(ROOT).as_posix(): n for p in sorted((ROOT / 'tools').rglob('*.py'))
            for n in [len(p.read_text(encoding='utf-8').splitlines())] if n > 150}
    new = {k: v for k, v in long.items() if k not in KNOWN_LONG}
    assert not new, f'tools over 150 lines (move the logic into mmvitscale/): {new}'


def mermaid() -> str:
    """The imports between the package's parts (subpackages and top-level modules), by floor."""
    def part(m: str) -> str:
        parts = m.split('.')
        return parts[1] if len(parts) > 1 else '__init__'

    graph = import_graph()
    edges = sorted({(part(a), part(b)) for a, deps in graph.items() for b in deps
                    if part(a) != part(b)})
    lines = ['flowchart BT']
    by_floor: Dict[int, List[str]] = {}
    for p in sorted({part(m) for m in graph}):
        by_floor.setdefault(floor_of('mmvitscale' + ('' if p == '__init__' else '.' + p)),
                            []).append(p)
    for floor in sorted(by_floor):
        lines.append(f'  subgraph F{floor}["{FLOOR_NAMES[floor]}"]')
        lines += [f'    {p}' if p != '__init__' else '    init["mmvitscale/__init__"]'
                  for p in by_floor[floor]]
        lines.append('  end')
    lines += ['  %s --> %s' % tuple('init' if x == '__init__' else x for x in e) for e in edges]
    return '\n'.join(lines)


if __name__ == '__main__':
    print(mermaid())
