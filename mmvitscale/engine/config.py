"""The one loader of a task config: under a rule file (:func:`load_with_rule`), with
``--cfg-options`` (:func:`load_config`), so that every override reaches every value derived
from the rule.

mmvitscale's task configs derive the backbone, the input size of the pipelines, the head width,
the detection strides / padding and the video clip length from one inherited ``scaling`` rule
while they are parsed. A plain ``cfg.merge_from_dict`` of ``--cfg-options
model.backbone.scaling.resolution=64`` after parsing would change only the backbone (a 64-px
model fed 32-px images). :func:`load_config` instead applies rule overrides by re-parsing the
config under the overridden rule (the way ``--rule`` swaps the rule file), then merges the other
options, so derived values follow the override or the override is refused before anything is
built.
"""
import ast
import os.path as osp
import re
import shutil
import tempfile
from typing import Any, Dict, Mapping, Optional

from mmengine.config import Config

from ..rules import check_rule_file

__all__ = ['load_config', 'load_with_rule', 'split_rule_options']

SCALING_BASE = '_base_/scaling/'  # how a rule's entry in a config's _base_ list reads
_PREDEFINED = ('fileDirname', 'fileBasename', 'fileBasenameNoExtension', 'fileExtname')


def _is_scaling_entry(entry: Any) -> bool:
    """Whether a ``_base_`` entry points into a ``_base_/scaling/`` folder."""
    return (isinstance(entry, str) and '::' not in entry
            and SCALING_BASE in entry.replace('\\', '/'))


def load_with_rule(config_path: str, rule_path: str):
    """Load a task config with its scaling-rule base swapped for another rule file.

    The config's ``_base_`` list must hold exactly one entry under ``_base_/scaling/``; it is
    replaced by ``rule_path`` (other relative entries are made absolute, ``pkg::`` entries kept),
    the rewritten text is loaded from a temporary folder and the folder removed, so every value
    the config derives from ``_base_.scaling`` follows the new rule.

    Returns:
        the loaded :class:`mmengine.config.Config`.

    Raises:
        ValueError: naming the file, when the config is missing or has no (or several) scaling
            bases, or the rule file is missing or defines no ``scaling`` dict.
    """
    config_path, rule_path = osp.abspath(config_path), osp.abspath(rule_path)
    if not osp.isfile(config_path):
        raise ValueError(f'config file not found: {config_path}')
    check_rule_file(rule_path)
    with open(config_path, encoding='utf-8') as f:
        text = f.read()
    node = next((n for n in ast.parse(text, filename=config_path).body
                 if isinstance(n, ast.Assign) and len(n.targets) == 1
                 and isinstance(n.targets[0], ast.Name) and n.targets[0].id == '_base_'), None)
    if node is None:
        raise ValueError(f'{config_path} has no `_base_ = [...]` list, so no scaling rule base '
                         'to replace')
    try:
        bases = ast.literal_eval(node.value)
    except ValueError as err:
        raise ValueError(f'{config_path}: `_base_` is not a literal list of paths') from err
    bases = [bases] if isinstance(bases, str) else list(bases)
    hits = [i for i, b in enumerate(bases) if _is_scaling_entry(b)]
    if len(hits) != 1:
        raise ValueError(f'{config_path} has {len(hits)} scaling rule bases (entries under '
                         f'{SCALING_BASE}) in its _base_ {bases}; expected exactly one')
    cfg_dir = osp.dirname(config_path)
    new_bases = []
    for i, base in enumerate(bases):
        if i == hits[0]:
            base = rule_path
        elif isinstance(base, str) and '::' not in base:
            base = osp.normpath(osp.join(cfg_dir, base))
        new_bases.append(base)

    lines = text.splitlines(keepends=True)
    start = sum(len(line) for line in lines[:node.lineno - 1]) + node.col_offset
    end = sum(len(line) for line in lines[:node.end_lineno - 1]) + node.end_col_offset
    text = text[:start] + f'_base_ = {new_bases!r}' + text[end:]
    name = osp.basename(config_path)
    values = dict(fileDirname=cfg_dir, fileBasename=name,
                  fileBasenameNoExtension=osp.splitext(name)[0],
                  fileExtname=osp.splitext(name)[1])
    for key in _PREDEFINED:  # keep {{ fileDirname }} etc. meaning the original file
        text = re.sub(r'\{\{\s*' + key + r'\s*\}\}', values[key].replace('\\', '/'), text)

    tmp_dir = tempfile.mkdtemp(prefix='mmvitscale_rule_')
    try:
        tmp_path = osp.join(tmp_dir, name)
        with open(tmp_path, 'w', encoding='utf-8') as f:
            f.write(text)
        return Config.fromfile(tmp_path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


_WHOLE = ('scaling', 'model.backbone.scaling')


def split_rule_options(cfg_options: Optional[Mapping[str, Any]]):
    """``(rule overrides, other options)`` of ``--cfg-options``: keys ``scaling[.k]`` and
    ``model.backbone.scaling[.k]`` are rule overrides."""
    rule_opts: Dict[str, Any] = {}
    rest: Dict[str, Any] = {}
    for key, value in (cfg_options or {}).items():
        if key in _WHOLE or key.startswith(tuple(w + '.' for w in _WHOLE)):
            rule_opts[key] = value
        else:
            rest[key] = value
    return rule_opts, rest


def _overridden_rule(base: Mapping[str, Any], rule_opts: Mapping[str, Any]) -> Dict[str, Any]:
    rule = {k: v for k, v in base.items()}
    for key, value in rule_opts.items():
        if key in _WHOLE:
            if not isinstance(value, Mapping):
                raise ValueError(f'--cfg-options {key}={value!r}: expected a dict of rule keys')
            rule = dict(value)
            continue
        name = key.split('scaling.', 1)[1]
        if not name or '.' in name:
            raise ValueError(f'--cfg-options {key}={value!r}: a rule key has no dots '
                             '(e.g. scaling.resolution=64)')
        if value is None or value == 'None':
            rule.pop(name, None)
        else:
            rule[name] = value
    return rule


def load_config(config_path: str, rule_path: Optional[str] = None,
                cfg_options: Optional[Mapping[str, Any]] = None) -> Config:
    """Load ``config_path`` (under ``rule_path`` if given) with ``cfg_options`` applied.

    Rule overrides (``scaling.<key>=v`` or ``model.backbone.scaling.<key>=v``) re-derive the
    whole config under the overridden rule; an invalid rule is refused with a ``ValueError``
    naming the option as typed. Other options are merged afterwards, as mmengine does.
    """
    rule_opts, rest = split_rule_options(cfg_options)
    cfg = load_with_rule(config_path, rule_path) if rule_path else Config.fromfile(config_path)
    if rule_opts:
        base = cfg.get('scaling')
        if not isinstance(base, Mapping):
            raise ValueError(f'--cfg-options {", ".join(rule_opts)}: {config_path} has no '
                             'scaling rule (a top-level `scaling` from a _base_/scaling/ file) '
                             'from which its settings are derived; override the backbone '
                             'arguments instead')
        rule = _overridden_rule(base.to_dict() if hasattr(base, 'to_dict') else dict(base),
                                rule_opts)
        tmp_dir = tempfile.mkdtemp(prefix='mmvitscale_override_')
        try:
            tmp_rule = osp.join(tmp_dir, 'rule.py')
            with open(tmp_rule, 'w', encoding='utf-8') as f:
                f.write(f'scaling = {rule!r}\n')
            try:
                cfg = load_with_rule(config_path, tmp_rule)
            except (ValueError, TypeError, KeyError) as err:
                shown = ' '.join(f'{k}={v!r}' for k, v in rule_opts.items())
                raise type(err)(f'--cfg-options {shown}: {err}') from None
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)
    if rest:
        cfg.merge_from_dict(rest)
    return cfg
