"""Shared machinery of the dataset generators, and the classification layout for mmpretrain.

Every generated dataset is a folder whose ``manifest.json`` is written last and records the
generator kind, its parameters, the item counts, the sha256 of the annotation files and the
total size of the data files. A generator:

* checks its parameters before any work (:class:`ValueError` naming the parameter);
* is a no-op when the target already holds a valid dataset with the same parameters;
* refuses (:class:`DatasetError`, suggesting ``--overwrite``) a target without a valid manifest,
  made with other parameters, or whose files are missing, resized or changed (every file's
  content is checked against the sha256 in the manifest, not only its size);
* writes into a temporary folder next to the target (``.NAME.tmp-PID-XXXX``) and renames it
  into place only after validating it, so an interrupted run never leaves a half-written
  dataset behind; the hidden folders of a killed run (its process is gone) are removed by the
  next run on the same target.
"""
import contextlib
import hashlib
import json
import os
import os.path as osp
import re
import shutil
import tempfile
import time
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional

from ..errors import flag_errors
from ..fileio import sha256_file
from . import fashion_mnist as fm

MANIFEST = 'manifest.json'
FORMAT_VERSION = 1
CLS_KIND = 'fashion-mnist-cls'


class DatasetError(RuntimeError):
    """An existing or freshly written dataset is invalid."""


def write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path``, creating its folder."""
    os.makedirs(osp.dirname(path) or '.', exist_ok=True)
    with open(path, 'wb') as f:
        f.write(data)


def dump_json(obj: Any) -> bytes:
    """Deterministic, compact JSON bytes (key order as built, newline-terminated)."""
    return (json.dumps(obj, separators=(',', ':'), ensure_ascii=False) + '\n').encode('utf-8')


def progress(iterable: Iterable, total: int, desc: str, enabled: bool) -> Iterable:
    """Wrap ``iterable`` in a progress bar (tqdm, else mmengine's) when ``enabled``."""
    if not enabled:
        return iterable
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm comes with mmdet; mmengine is always there
        from mmengine.utils import track_iter_progress
        return track_iter_progress((iterable, total))
    return tqdm(iterable, total=total, desc=desc, unit='item', dynamic_ncols=True)


def check_positive(params: Dict[str, Any], names: Iterable[str], flag: Callable[[str], str]):
    """Raise ValueError naming the first of ``names`` whose value is not a positive int."""
    for name in names:
        value = params[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f'{flag(name)} must be a positive integer, got {value!r}')


def cli_flag(name: str) -> str:
    """``num_train`` -> ``--num-train``."""
    return '--' + name.replace('_', '-')


def _normalised(params: Dict[str, Any]) -> Dict[str, Any]:
    return json.loads(json.dumps(params))


def data_size(root: str, files: Iterable[str]) -> int:
    """Total bytes of ``files`` (relative to ``root``); DatasetError naming a missing one."""
    total = 0
    for rel in files:
        path = osp.join(root, rel)
        if not osp.isfile(path):
            raise DatasetError(f'{root}: data file {rel} is missing')
        total += osp.getsize(path)
    return total


def check_existing(out_dir: str, kind: str, params: Dict[str, Any],
                   list_data: Callable[[str], Dict[str, List[str]]]) -> Optional[dict]:
    """The manifest of a valid dataset at ``out_dir`` made with ``params``; None if none there.

    ``list_data(root)`` returns, per split, the data files its (already hash-checked)
    annotations reference. Raises :class:`DatasetError` saying what is wrong otherwise.
    """
    if not osp.lexists(out_dir) or (osp.isdir(out_dir) and not os.listdir(out_dir)):
        return None  # absent or an empty folder: nothing to keep, nothing to lose
    hint = 'delete it or rerun with --overwrite (overwrite=True) to regenerate it'
    if not osp.isdir(out_dir):
        raise DatasetError(f'{out_dir} exists and is not a folder; {hint}')
    path = osp.join(out_dir, MANIFEST)
    if not osp.isfile(path):
        raise DatasetError(f'{out_dir} exists but has no {MANIFEST} (a partial dataset, or not '
                           f'made by this tool); {hint}')
    try:
        with open(path, encoding='utf-8') as f:
            manifest = json.load(f)
        got_kind, got_params = manifest['kind'], manifest['params']
        files, sizes = manifest['files'], manifest['data_bytes']
    except (ValueError, KeyError, TypeError) as e:
        raise DatasetError(f'{path} is corrupt ({type(e).__name__}: {e}); {hint}') from e
    if got_kind != kind or manifest.get('format_version') != FORMAT_VERSION:
        raise DatasetError(f'{out_dir} holds a {got_kind!r} dataset (format '
                           f'{manifest.get("format_version")}), not {kind!r} (format '
                           f'{FORMAT_VERSION}); {hint}')
    wanted = _normalised(params)
    if got_params != wanted:
        diff = ', '.join(f'{k}={got_params.get(k)!r} (requested {v!r})'
                         for k, v in wanted.items() if got_params.get(k) != v)
        raise DatasetError(f'{out_dir} was generated with other parameters: {diff}; {hint}')
    for rel, digest in files.items():
        file_path = osp.join(out_dir, rel)
        if not osp.isfile(file_path):
            raise DatasetError(f'{out_dir}: {rel} is missing; {hint}')
        if sha256_file(file_path) != digest:
            raise DatasetError(f'{out_dir}: {rel} was modified or is corrupt (sha256 differs '
                               f'from {MANIFEST}); {hint}')
    try:
        listed = list_data(out_dir)
        for split, rels in listed.items():
            size = data_size(out_dir, rels)
            if size != sizes.get(split):
                raise DatasetError(f'{out_dir}: the {split} data files total {size} bytes, '
                                   f'{MANIFEST} says {sizes.get(split)} (files were changed)')
        check_data_hashes(out_dir, manifest, listed)
    except DatasetError as e:
        raise DatasetError(f'{e}; {hint}') from e
    return manifest


def _split_digest(root: str, rels: Iterable[str], hashes: Dict[str, str]) -> str:
    """The manifest's ``data_sha256`` of one split; fills ``hashes`` (rel -> file sha256)."""
    digest = hashlib.sha256()
    for rel in rels:
        hashes[rel] = sha256_file(osp.join(root, rel))
        digest.update(f'{rel}\0{hashes[rel]}\n'.encode())
    return digest.hexdigest()


def check_data_hashes(root: str, manifest: dict, listed: Dict[str, List[str]]) -> None:
    """DatasetError naming the first data file whose content differs from the manifest.

    Each file is compared with ``data_files`` (per-file sha256); manifests written before that
    key existed are checked per split against ``data_sha256``.
    """
    per_file = manifest.get('data_files') or {}
    per_split = manifest.get('data_sha256')
    if not isinstance(per_file, dict) or not isinstance(per_split, dict):
        raise DatasetError(f'{osp.join(root, MANIFEST)} has no data_sha256 / data_files '
                           'content hashes')
    for split, rels in listed.items():
        hashes: Dict[str, str] = {}
        if _split_digest(root, rels, hashes) == per_split.get(split):
            continue
        for rel in rels:
            if rel in per_file and per_file[rel] != hashes[rel]:
                raise DatasetError(f'{root}: data file {rel} was modified or is corrupt (sha256 '
                                   f'differs from {MANIFEST}, same size or not)')
        raise DatasetError(f'{root}: the {split} data files were modified or are corrupt (their '
                           f'sha256 differs from {MANIFEST}, sizes match)')


class ManifestCheck:
    """The content hashes of a generated dataset, for checking its files as they are read.

    A data loader calls :meth:`check_file` on each file it reads: a file whose sha256 differs
    from ``manifest.json`` (a clip with flipped bytes decodes to wrong frames without any error)
    raises :class:`DatasetError` naming it. Files the manifest does not list are not checked.
    """

    def __init__(self, root: str, manifest: Dict[str, Any]) -> None:
        self.root = osp.abspath(root)
        self.path = osp.join(self.root, MANIFEST)
        self.hashes: Dict[str, str] = dict(manifest.get('files') or {})
        self.hashes.update(manifest.get('data_files') or {})

    @classmethod
    def find(cls, ann_file: str) -> Optional['ManifestCheck']:
        """The check of the generated dataset holding ``ann_file`` (a ``manifest.json`` in its
        folder or the folder above, listing it), else None."""
        folder = osp.dirname(osp.abspath(ann_file))
        for root in (folder, osp.dirname(folder)):
            path = osp.join(root, MANIFEST)
            if not osp.isfile(path):
                continue
            try:
                with open(path, encoding='utf-8') as f:
                    manifest = json.load(f)
            except (OSError, ValueError) as e:
                raise DatasetError(f'{path} is corrupt ({type(e).__name__}: {e})') from e
            check = cls(root, manifest if isinstance(manifest, dict) else {})
            if check.listed(ann_file):
                return check
        return None

    def listed(self, path: str) -> bool:
        """Whether the manifest records ``path``'s hash."""
        return osp.relpath(osp.abspath(path), self.root) in self.hashes

    def check_file(self, path: str) -> None:
        """:class:`DatasetError` naming ``path`` when its content differs from the manifest."""
        digest = self.hashes.get(osp.relpath(osp.abspath(path), self.root))
        if digest is None:
            return
        try:
            same = sha256_file(path) == digest
        except OSError as e:
            raise DatasetError(f'{path}: cannot be read ({e})') from e
        if not same:
            raise DatasetError(f'{path}: modified or corrupt: its sha256 differs from '
                               f'{self.path} (regenerate the dataset with --overwrite)')


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def clean_stale_temp(out_dir: str) -> List[str]:
    """Remove ``.NAME.tmp-*`` / ``.NAME.old-*`` folders that a killed generator left beside
    ``out_dir``; returns the removed paths.

    Folders named with a process id (``.NAME.tmp-PID-XXXX``) are removed only when that process
    is gone, so a generator running now keeps its own; folders without one (left by an older
    version) are always stale.
    """
    out_dir = osp.abspath(out_dir)
    parent, name = osp.split(out_dir)
    if not osp.isdir(parent):
        return []
    pattern = re.compile(r'\.' + re.escape(name) + r'\.(tmp|old)-(?:(\d+)-)?[^/]*$')
    removed = []
    for entry in sorted(os.listdir(parent)):
        match = pattern.match(entry)
        if match is None:
            continue
        pid = match.group(2)
        if pid is not None and (int(pid) == os.getpid() or _pid_alive(int(pid))):
            continue
        path = osp.join(parent, entry)
        if osp.isdir(path) and not osp.islink(path):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


@contextlib.contextmanager
def atomic_dir(out_dir: str) -> Iterator[str]:
    """Yield a fresh temporary folder next to ``out_dir``; on success it replaces ``out_dir``.

    On any exception the temporary folder is removed and ``out_dir`` is left untouched.
    """
    out_dir = osp.abspath(out_dir)
    parent, name = osp.split(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f'.{name}.tmp-{os.getpid()}-', dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700
    old = None
    try:
        yield tmp
        if osp.lexists(out_dir):
            old = osp.join(tempfile.mkdtemp(prefix=f'.{name}.old-{os.getpid()}-', dir=parent),
                           name)
            os.rename(out_dir, old)
        os.rename(tmp, out_dir)
    except BaseException:
        if old is not None and not osp.lexists(out_dir):
            os.rename(old, out_dir)  # put the previous dataset back
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old is not None:
            shutil.rmtree(osp.dirname(old), ignore_errors=True)


def write_manifest(root: str, kind: str, params: Dict[str, Any], counts: Dict[str, Any],
                   ann_files: Iterable[str], data: Dict[str, List[str]]) -> dict:
    """Write ``manifest.json`` (last step of a generator) and return it."""
    data_bytes, data_sha256, data_files = {}, {}, {}
    for split, rels in data.items():
        data_bytes[split] = data_size(root, rels)
        data_sha256[split] = _split_digest(root, rels, data_files)
    manifest = dict(
        kind=kind, format_version=FORMAT_VERSION, params=_normalised(params), counts=counts,
        files={rel: sha256_file(osp.join(root, rel)) for rel in ann_files},
        data_bytes=data_bytes, data_sha256=data_sha256, data_files=data_files)
    write_bytes(osp.join(root, MANIFEST), json.dumps(manifest, indent=2).encode() + b'\n')
    return manifest


def generate(out_dir: str, kind: str, params: Dict[str, Any], overwrite: bool,
             build: Callable[[str], Dict[str, Any]],
             list_data: Callable[[str], Dict[str, List[str]]],
             validate: Callable[[str], Dict[str, Any]], ann_files: List[str]) -> dict:
    """Common driver: no-op check, atomic build, validation, manifest.

    ``build(tmp)`` writes the dataset into ``tmp``; ``validate(root)`` checks it and returns its
    counts (raising :class:`DatasetError`); ``list_data`` is as in :func:`check_existing`.
    Returns the manifest plus ``reused`` (True when an existing valid dataset was kept) and
    ``stale_removed`` (the temporary folders of a killed earlier run, removed first).
    """
    removed = clean_stale_temp(out_dir)
    if not overwrite:
        manifest = check_existing(out_dir, kind, params, list_data)
        if manifest is not None:
            return dict(manifest, reused=True, stale_removed=removed)
    with atomic_dir(out_dir) as tmp:
        build(tmp)
        counts = validate(tmp)
        manifest = write_manifest(tmp, kind, params, counts, ann_files, list_data(tmp))
    return dict(manifest, reused=False, stale_removed=removed)


# ---------------------------------------------------------------------------------------------
# Classification: the layout mmpretrain's MNIST / FashionMNIST read.
# ---------------------------------------------------------------------------------------------
def _cls_list_data(root: str) -> Dict[str, List[str]]:
    return {}


def _cls_validate(root: str) -> Dict[str, Any]:
    counts = {}
    for split, (images, labels) in fm.SPLITS.items():
        arrays = []
        for name in (images, labels):
            path = osp.join(root, name)
            if not osp.isfile(path):
                raise DatasetError(f'{root}: {name} was not written')
            with open(path, 'rb') as f:
                arrays.append(fm.parse_idx(f.read(), path))
        img, lab = arrays
        if img.shape != (fm.SPLIT_SIZES[split], 28, 28) or lab.shape != img.shape[:1]:
            raise DatasetError(f'{root}: {split} has shapes {img.shape} / {lab.shape}')
        if int(lab.max()) >= len(fm.CLASSES):
            raise DatasetError(f'{root}: {split} labels exceed {len(fm.CLASSES) - 1}')
        counts[split] = int(img.shape[0])
    return counts


def prepare_classification(out_dir: str, source: Optional[str] = None,
                           overwrite: bool = False) -> dict:
    """Write the decompressed idx files mmpretrain's ``FashionMNIST`` reads under ``data_root``.

    mmpretrain looks for ``{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (its list of ``.gz``
    names with the suffix dropped) and reads them raw, so the gzipped source cannot simply be
    linked. The content's md5 is checked against the official release (mmpretrain's md5s are
    of upstream ``.gz`` archives, which differ from Debian's re-gzipped ones and are only
    checked when it downloads). Returns the manifest.
    """
    src = fm.source_dir(source)

    def build(tmp: str) -> None:
        for name, md5 in fm.RAW_MD5.items():
            path = fm.find_file(src, name)
            data = fm.read_raw(path)
            got = hashlib.md5(data).hexdigest()
            if got != md5:
                raise DatasetError(f'{path}: decompressed md5 {got} is not that of the '
                                   f'official Fashion-MNIST file ({md5})')
            write_bytes(osp.join(tmp, name), data)

    return generate(out_dir, CLS_KIND, {}, overwrite, build, _cls_list_data, _cls_validate,
                    sorted(fm.RAW_MD5))


def run_cli(out_dir: str, build: Callable[[], dict]) -> dict:
    """Run a generator for a command-line tool: errors become ``SystemExit('error: ...')``,
    success prints what was written (or kept) and how long it took."""
    start = time.perf_counter()
    try:
        manifest = build()
    except (DatasetError, fm.FashionMNISTNotFoundError, ValueError) as e:
        raise SystemExit(f'error: {e}')
    for path in manifest.get('stale_removed', ()):
        print(f'removed {path} (left by a generator that was killed)')
    action = 'kept valid existing' if manifest['reused'] else 'wrote'
    print(f"{action} {out_dir}: {manifest['counts']} in {time.perf_counter() - start:.1f} s")
    return manifest


def add_generator_flags(parser: Any) -> Any:
    """The flags every data tool shares: ``--seed``, ``--source``, ``--overwrite``,
    ``--no-progress``."""
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    parser.add_argument('--source', default=None, help='folder with the Fashion-MNIST idx files')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing output')
    parser.add_argument('--no-progress', action='store_true', help='hide the progress bar')
    return parser


def generator_tool(parser: Any, argv: Optional[List[str]], params: Iterable[str],
                   check: Callable[..., Any], generate: Callable[..., dict]) -> dict:
    """A data tool (``tools/data/make_*.py``): parse ``argv``, check the ``params`` flags with
    ``check`` before any work (``parser.error`` naming the flag), then ``generate`` into
    ``--out`` (:func:`run_cli`)."""
    args = parser.parse_args(argv)
    values = {k: getattr(args, k) for k in params}
    with flag_errors(parser):
        check(values, flag=cli_flag)
    return run_cli(args.out, lambda: generate(
        args.out, **values, overwrite=args.overwrite, source=args.source,
        show_progress=not args.no_progress))
