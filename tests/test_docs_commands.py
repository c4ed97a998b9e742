"""Docs that cannot lie: every shell command in README.md, docs/ and the READMEs of the shipped
data (data/*/README.md) that runs a project tool parses.

A command is found in a shell code block (```bash / sh / shell / console, or a fence with no
language; in ``console`` blocks only ``$ `` lines) or in an inline code span, and is checked
when it runs

- ``python|python3|.venv/bin/python tools/...py`` or ``... benchmarks/...py``: its arguments go
  through the tool's own argparse parser (the script runs as ``__main__`` with
  ``ArgumentParser.parse_args`` / ``parse_known_args`` stopped right after parsing, so no work is
  done), all in one subprocess;
- ``bash tools/X.sh``: the script exists; the ``train.py`` arguments that ``dist_train.sh`` /
  ``slurm_train.sh`` forward are parsed by ``tools/train.py``'s parser;
- ``mim train|test mmvitscale ...``: the arguments are parsed by ``tools/train.py`` /
  ``tools/test.py``;
- ``make X``: the Makefile has a target X.

Not commands: fences marked with another language (``text``, ``python``, ...), and commands
whose arguments are elided with a ``...`` word (``python tools/transfer.py ...same
arguments...``).
"""
import json
import os.path as osp
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, NamedTuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHELL_FENCES = {'', 'bash', 'sh', 'shell', 'console'}
PYTHONS = {'python', 'python3', '.venv/bin/python', '$(PY)', '$PY'}
WRAPPERS = {'time', '/usr/bin/time', 'nohup'}
# bash wrappers of tools/train.py: how many of their own positionals come before the train.py
# arguments they forward, and which of those positionals is the config
FORWARDING = {'tools/dist_train.sh': (2, 0), 'tools/slurm_train.sh': (4, 2)}


class Command(NamedTuple):
    where: str  # file:line
    kind: str  # 'python' (argv[0] is the script), 'bash', 'make'
    argv: List[str]


def doc_files() -> List[Path]:
    docs = [p for p in (ROOT / 'docs').rglob('*.md') if '_build' not in p.parts]
    return [ROOT / 'README.md'] + sorted(docs) + sorted((ROOT / 'data').glob('*/README.md'))


def snippets(text: str):
    """(line number, shell text) pairs: shell fence lines (continuations joined) and inline
    code spans of prose (a span may wrap over lines of one paragraph)."""
    lines = text.splitlines()
    i, prose = 0, []
    while i < len(lines):
        fence = re.match(r'^\s*(`{3,}|~{3,})\s*([^\s`]*)', lines[i])
        if not fence:
            prose.append((i + 1, lines[i]))
            i += 1
            continue
        mark, lang = fence.group(1), fence.group(2).strip('{}').lower()
        i += 1
        cont, start = '', 0
        while i < len(lines) and not lines[i].strip().startswith(mark):
            line = lines[i]
            i += 1
            if lang not in SHELL_FENCES:
                continue
            if lang == 'console' and not cont:
                if not line.startswith('$ '):
                    continue
                line = line[2:]
            if not cont:
                start = i
            if line.rstrip().endswith('\\'):
                cont += line.rstrip()[:-1] + ' '
                continue
            yield start, cont + line
            cont = ''
        i += 1
        prose.append((i, ''))
    para: list = []
    for lineno, line in prose + [(0, '')]:
        if line.strip():
            para.append((lineno, line))
            continue
        if para:
            joined = ' '.join(t for _, t in para)
            for m in re.finditer(r'(?<!`)`([^`]+)`(?!`)', joined):
                yield para[0][0], m.group(1).replace('\\|', '|')
            para = []


def commands_in(snippet: str) -> List[List[str]]:
    """The project-tool commands of one shell snippet, each as its words."""
    out = []
    for part in re.split(r'&&|\|\||;|\|(?!\|)', snippet):
        try:
            words = shlex.split(part, comments=True)
        except ValueError:  # an unbalanced quote: prose, not a command
            continue
        while words and (re.match(r'^[A-Za-z_][A-Za-z0-9_]*=', words[0]) or words[0] in WRAPPERS):
            words = words[1:]
        if len(words) >= 2 and words[0] == 'flock':
            words = words[3:] if len(words) > 3 and words[1].startswith('-') else words[2:]
        if len(words) >= 2 and words[0] in PYTHONS and re.match(
                r'^(tools|benchmarks)/[\w/]+\.py$', words[1]):
            out.append(['python'] + words[1:])
        elif len(words) >= 2 and words[0] == 'bash' and words[1].startswith('tools/'):
            out.append(words)
        elif len(words) >= 3 and words[:1] == ['mim'] and words[1] in ('train', 'test') \
                and words[2] == 'mmvitscale':
            out.append(['python', 'tools/%s.py' % words[1]] + words[3:])
        elif len(words) >= 2 and words[0] == 'make' and re.match(r'^[\w-]+$', words[1]):
            out.append(words[:2])
    return out


def collect() -> List[Command]:
    found, seen = [], set()
    for path in doc_files():
        rel = path.relative_to(ROOT).as_posix()
        for lineno, snippet in snippets(path.read_text(encoding='utf-8')):
            for words in commands_in(snippet):
                if any('...' in w for w in words):
                    continue  # elided arguments: an abbreviation, not a command
                if words[0] == 'bash':
                    kind, argv = 'bash', words[1:]
                    fwd = FORWARDING.get(argv[0])
                    if fwd:
                        n, cfg = fwd
                        rest = argv[1:]
                        if len(rest) >= n:
                            key = ('python', ('tools/train.py', rest[cfg]) + tuple(rest[n:]))
                            if key not in seen:
                                seen.add(key)
                                found.append(Command('%s:%d' % (rel, lineno), 'python',
                                                     ['tools/train.py', rest[cfg]] + rest[n:]))
                elif words[0] == 'make':
                    kind, argv = 'make', words[1:]
                else:
                    kind, argv = 'python', words[1:]
                key = (kind, tuple(argv))
                if key not in seen:
                    seen.add(key)
                    found.append(Command('%s:%d' % (rel, lineno), kind, argv))
    return found


# Runs in one fresh interpreter: each tool as __main__ with argv, stopped after parsing.
CHECKER = r'''
import argparse, contextlib, io, json, runpy, sys, threading
root, jobs = sys.argv[1], json.loads(sys.stdin.read())
sys.path.insert(0, root)

class Parsed(BaseException):
    pass

state = threading.local()
def stop_after(orig):
    """``orig`` (a parse method) that raises Parsed once the outermost parse is done."""
    def parse(self, args=None, namespace=None):
        if getattr(state, 'inside', False):
            return orig(self, args, namespace)
        state.inside = True
        try:
            orig(self, args, namespace)
        finally:
            state.inside = False
        raise Parsed()
    return parse

for method in ('parse_known_args', 'parse_args'):
    setattr(argparse.ArgumentParser, method,
            stop_after(getattr(argparse.ArgumentParser, method)))
results = []
for argv in jobs:
    err = io.StringIO()
    sys.argv = list(argv)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            runpy.run_path(argv[0], run_name='__main__')
        results.append('no argparse parser was reached')
    except Parsed:
        results.append(None)
    except SystemExit as e:
        results.append('exit %s: %s' % (e.code, err.getvalue().strip()[-600:]))
    except Exception as e:
        results.append('%s: %s' % (type(e).__name__, e))
print(json.dumps(results))
'''


def make_targets() -> set:
    text = (ROOT / 'Makefile').read_text()
    return set(re.findall(r'^([\w-]+)\s*:(?!=)', text, flags=re.M))


def test_extraction_finds_commands_of_every_kind():
    """The extractor sees fenced, continued, console and inline commands (guards against a
    parser change that silently finds nothing)."""
    text = ('Run `python tools/transfer.py --workers 2` or\n`.venv/bin/python tools/a.py\n--x 1`.\n'
            '\n```bash\nmake demo   # comment\npython tools/b.py --y \\\n    2\n```\n'
            '```console\n$ GPUS=0 bash tools/slurm_train.sh cpu J c.py wd --resume\nout\n```\n'
            '```text\npython tools/c.py --z\n```\n')
    got = [w for _, s in snippets(text) for w in commands_in(s)]
    assert ['python', 'tools/transfer.py', '--workers', '2'] in got
    assert ['python', 'tools/a.py', '--x', '1'] in got
    assert ['make', 'demo'] in got
    assert ['python', 'tools/b.py', '--y', '2'] in got
    assert ['bash', 'tools/slurm_train.sh', 'cpu', 'J', 'c.py', 'wd', '--resume'] in got
    assert not any('tools/c.py' in w for w in got)
    assert len(collect()) >= 20


def test_every_documented_command_parses():
    cmds = collect()
    problems: Dict[str, str] = {}
    targets = make_targets()
    jobs = []
    for c in cmds:
        if c.kind == 'make':
            if c.argv[0] not in targets:
                problems[c.where + ' make ' + c.argv[0]] = 'no such Makefile target'
        elif c.kind == 'bash':
            if not osp.isfile(ROOT / c.argv[0]):
                problems[c.where + ' bash ' + c.argv[0]] = 'no such script'
        elif not osp.isfile(ROOT / c.argv[0]):
            problems[c.where + ' ' + ' '.join(c.argv)] = 'no such script'
        else:
            jobs.append(c)
    proc = subprocess.run([sys.executable, '-c', CHECKER, str(ROOT)], cwd=ROOT,
                          input=json.dumps([c.argv for c in jobs]), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for c, res in zip(jobs, json.loads(proc.stdout.strip().splitlines()[-1])):
        if res is not None:
            problems[c.where + ' python ' + ' '.join(c.argv)] = res
    assert not problems, '\n\n'.join('%s\n  -> %s' % kv for kv in problems.items())


@pytest.mark.parametrize('words, ok', [(['--workers', '2'], True), (['--no-such-flag'], False)])
def test_checker_fails_a_changed_flag(tmp_path, words, ok):
    """The checker's verdict on a tool with a known parser: a real flag parses, an unknown one
    fails (so the test above can fail)."""
    tool = tmp_path / 'tool.py'
    tool.write_text('import argparse\n'
                    'def main():\n'
                    '    p = argparse.ArgumentParser()\n'
                    "    p.add_argument('--workers', type=int)\n"
                    '    p.parse_args()\n'
                    "    raise RuntimeError('work was done')\n"
                    "if __name__ == '__main__':\n"
                    '    main()\n')
    proc = subprocess.run([sys.executable, '-c', CHECKER, str(ROOT)],
                          input=json.dumps([[str(tool)] + words]), capture_output=True,
                          text=True, timeout=60)
    (res, ) = json.loads(proc.stdout.strip().splitlines()[-1])
    if ok:
        assert res is None
    else:
        assert res.startswith('exit 2') and '--no-such-flag' in res
