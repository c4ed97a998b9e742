"""Errors shared by the package's input checks, and the checks every tool shares: seed lists
(:func:`seed_list_error`), output / data folders (:func:`folder_error`, :func:`check_folder`,
:func:`folder_arg`) and finite positive numbers (:func:`positive_number_error`).

The one way errors leave a tool: :func:`flag_errors` turns a known error into
``parser.error`` (usage, then one line ``prog: error: message`` on stderr, exit status 2).
"""
import contextlib
import math
import os
import os.path as osp
import re
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Tuple, Type, Union


class InputError(ValueError):
    """A bad input value, raised before any work; it names the argument(s) at fault.

    ``names`` are the parameter names (e.g. ``('budget_quantiles', )``), ``item`` the element
    of a list argument at fault (or None) and ``detail`` what is wrong. ``str(err)`` is
    ``'<name>[ / <name>...][ <item>]: <detail>'``; a command-line shell rebuilds it with its
    own flag names through :meth:`format`.
    """

    def __init__(self, names: Union[str, Sequence[str]], detail: str,
                 item: Optional[str] = None) -> None:
        self.names: Tuple[str, ...] = (names, ) if isinstance(names, str) else tuple(names)
        self.detail = detail
        self.item = item
        super().__init__(self.format())

    def format(self, rename: Callable[[str], str] = str) -> str:
        """The message with every name passed through ``rename`` (e.g. to a ``--flag``)."""
        head = ' / '.join(rename(n) for n in self.names)
        if self.item is not None:
            head += f' {self.item}'
        return f'{head}: {self.detail}'


def flag_name(name: str) -> str:
    """A parameter name as its command-line flag: ``train_seeds`` -> ``--train-seeds``."""
    return '--' + name.replace('_', '-')


@contextlib.contextmanager
def flag_errors(parser: Any, *known: Type[BaseException],
                rename: Callable[[str], str] = flag_name) -> Iterator[None]:
    """Inside the block, an :class:`InputError` (its names shown as the user's flags through
    ``rename``, default :func:`flag_name`) or an error of the ``known`` types (default
    ``ValueError``) ends the tool through ``parser.error``: usage, one line
    ``prog: error: message``, exit status 2. Anything else propagates with its traceback (a
    bug, not bad input)."""
    try:
        yield
    except InputError as err:
        parser.error(err.format(rename))
    except known or (ValueError, ) as err:
        parser.error(str(err))


def min_flag_error(flags: Any, names: Sequence[str], minimum: int = 1) -> Optional[str]:
    """The first of ``names`` (attributes of parsed ``flags``) below ``minimum``, as
    ``'--name must be >= minimum, got value'``; ``None`` when all are at least ``minimum``."""
    for name in names:
        value = getattr(flags, name)
        if value < minimum:
            return f'{flag_name(name)} must be >= {minimum}, got {value}'
    return None


MAX_SEED = 2 ** 32 - 1  # numpy's seed range (``np.random.seed``, mmengine's set_random_seed)


def seed_list_error(seeds: Sequence[int]) -> Optional[str]:
    """What is wrong with a list of seeds, or ``None``: a study's seeds must be distinct
    integers from 0 to :data:`MAX_SEED`, at least one (the shared check of ``--seeds``-like
    arguments)."""
    seeds = list(seeds)
    if (not seeds or len(set(seeds)) != len(seeds)
            or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds)):
        return f'must be distinct integers >= 0, got {seeds}'
    big = [s for s in seeds if s > MAX_SEED]
    if big:
        return (f'must be at most {MAX_SEED} (2**32 - 1, the seed range of numpy), got '
                f'{big[0]}')
    return None


def positive_number_error(value: object) -> Optional[str]:
    """What is wrong with a value that must be a finite number > 0 (a budget, a tolerance), or
    ``None``. ``inf`` and ``nan`` are refused: every cost passes ``cost <= inf`` and none
    passes ``cost <= nan``, so either makes a search meaningless."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f'must be a positive number, got {value!r}'
    if not math.isfinite(value):
        return f'must be a finite positive number, got {value}'
    if value <= 0:
        return f'must be a positive number, got {value:g}'
    return None


# file systems that hold no user files (writing there fails or does something else)
PSEUDO_FILESYSTEMS = frozenset({
    'autofs', 'binfmt_misc', 'bpf', 'cgroup', 'cgroup2', 'configfs', 'debugfs', 'devpts',
    'devtmpfs', 'efivarfs', 'fusectl', 'hugetlbfs', 'mqueue', 'nsfs', 'proc', 'pstore',
    'securityfs', 'sysfs', 'tracefs'})


def _mounts() -> Dict[str, str]:
    """``{mount point: file system type}`` of this process (Linux); empty elsewhere."""
    out: Dict[str, str] = {}
    try:
        with open('/proc/self/mountinfo', encoding='utf-8', errors='replace') as f:
            for line in f:
                fields = line.split()
                if '-' not in fields:
                    continue
                sep = fields.index('-')
                point = re.sub(r'\\([0-7]{3})', lambda m: chr(int(m.group(1), 8)), fields[4])
                out[point] = fields[sep + 1] if sep + 1 < len(fields) else ''
    except OSError:
        pass
    return out


def _filesystem(path: str) -> Tuple[str, str]:
    """``(mount point, file system type)`` holding the existing ``path`` (``('', '')`` when
    unknown)."""
    real = osp.realpath(path)
    best = ('', '')
    for point, kind in _mounts().items():
        inside = real == point or real.startswith(point.rstrip('/') + '/')
        if inside and len(point) >= len(best[0]):
            best = (point, kind)
    return best


def _what(path: str) -> str:
    import stat
    mode = os.stat(path).st_mode
    for test, name in ((stat.S_ISREG, 'a file'), (stat.S_ISFIFO, 'a FIFO'),
                       (stat.S_ISSOCK, 'a socket'), (stat.S_ISCHR, 'a character device'),
                       (stat.S_ISBLK, 'a block device')):
        if test(mode):
            return name
    return 'not a folder'


def creatable_error(path: str) -> Optional[str]:
    """What stops a file or folder from being created (or replaced) at ``path``; ``None`` if
    nothing does. Writes nothing.

    The nearest existing ancestor decides (``makedirs`` creates the rest): refused when it is
    not a folder (saying what it is), not writable, or on a file system that holds no user
    files (``/proc``, ``/sys``, ``/dev``: :data:`PSEUDO_FILESYSTEMS`).
    """
    existing = osp.dirname(osp.abspath(path))
    while not osp.exists(existing):
        existing = osp.dirname(existing)
    if not osp.isdir(existing):
        return f'{path} is under {existing}, which is {_what(existing)}'
    return _unusable_folder(path, existing,
                            f'{existing} is not writable, so {path} cannot be written')


def _unusable_folder(path: object, folder: str, not_writable: str) -> Optional[str]:
    """What stops the existing ``folder`` (``path`` or its nearest existing ancestor) from
    holding ``path``: a pseudo file system, or ``not_writable`` when it is not writable."""
    point, kind = _filesystem(folder)
    if kind in PSEUDO_FILESYSTEMS:
        return f'{path} is on {point} (a {kind} file system), which holds no user files'
    if not os.access(folder, os.W_OK | os.X_OK):
        return not_writable
    return None


def folder_error(path: object) -> Optional[str]:
    """What stops ``path`` from being used, or created, as a writable folder (an output or data
    folder); ``None`` if nothing does. Writes nothing.

    Refused: a path that exists and is not a folder (saying what it is), and whatever
    :func:`creatable_error` refuses (under a file, not writable, ``/proc`` and the like).
    """
    if not isinstance(path, str) or not path:
        return f'expected a folder path, got {path!r}'
    full = osp.abspath(path)
    if not osp.exists(full):
        return creatable_error(path)
    if not osp.isdir(full):
        return f'{path} is {_what(full)}, not a folder'
    return _unusable_folder(path, full, f'{path} is a folder that is not writable')


def folder_arg(path: str) -> str:
    """``type=`` of a folder flag (``--out-dir``, ``--data-root``, ``--work-dir``):
    :func:`folder_error` as an ``argparse.ArgumentTypeError``, so argparse refuses the value in
    one line naming the flag (``error: argument --out-dir: ...``) before any work."""
    problem = folder_error(path)
    if problem:
        import argparse
        raise argparse.ArgumentTypeError(problem)
    return path


def check_folder(path: str, name: str) -> str:
    """``path`` if :func:`folder_error` finds nothing, else an :class:`InputError` naming
    ``name`` (the parameter; a tool passes its flag, e.g. ``'--out-dir'``)."""
    problem = folder_error(path)
    if problem:
        raise InputError(name, problem)
    return path
