"""Loading a task config so that every override reaches every value derived from the rule.

mmvitscale's task configs derive the backbone, the input size of the pipelines, the head width,
the detection strides / padding and the video clip length from one inherited ``scaling`` rule
while they are parsed. A plain ``cfg.merge_from_dict`` of ``--cfg-options
model.backbone.scaling.resolution=64`` after parsing would change only the backbone (a 64-px
model fed 32-px images). :func:`load_config` instead applies rule overrides by re-parsing the
config under the overridden rule (the way ``--rule`` swaps the rule file), then merges the other
options, so derived values follow the override or the override is refused before anything is
built.
"""
import os.path as osp
import shutil
import tempfile
from typing import Any, Dict, Mapping, Optional

from mmengine.config import Config

from ..rules import load_with_rule

__all__ = ['load_config', 'split_rule_options']

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
