"""Sparsity regulariser of Castling-ViT's auxiliary attention branch, as an mmengine hook."""
import functools
from typing import Optional

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from torch import nn

from ..models.linear_attention import aux_masks, aux_regularizer
from ..registry import HOOKS


@HOOKS.register_module()
class AuxMaskSparsityHook(Hook):
    """Adds ``weight * sum |aux_mask|`` to the training loss (Castling-ViT).

    Mechanism: before training, the model's ``parse_losses`` (the
    :class:`mmengine.model.BaseModel` method every ``train_step`` calls on the loss dict, in
    mmpretrain, mmdet and mmaction2 alike, also under ``MMDistributedDataParallel``, which calls
    ``module.parse_losses``) is wrapped on the instance so the loss dict gains a
    ``loss_aux_mask`` entry. It is therefore summed into the back-propagated loss, logged like
    any other loss and scaled by gradient accumulation as usual. The wrapper is removed after
    training. Masks are found on every
    :class:`~mmvitscale.models.linear_attention.LinearAngularAttention` in the model; a model
    without any is a ``ValueError`` at ``before_run``.

    Once trained, :func:`mmvitscale.models.linear_attention.convert_to_inference` removes the
    branch (exact for zero masks).

    Args:
        weight: coefficient of the L1 penalty (non-negative).
    """

    priority = 'NORMAL'

    def __init__(self, weight: float = 1e-4) -> None:
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
            raise ValueError(f'weight must be a non-negative number, got {weight!r}')
        self.weight = float(weight)
        self._patched: Optional[nn.Module] = None

    @staticmethod
    def _model(runner) -> nn.Module:
        model = runner.model
        return model.module if is_model_wrapper(model) else model

    def before_run(self, runner) -> None:
        if not aux_masks(self._model(runner)):
            raise ValueError("AuxMaskSparsityHook: the model has no aux_mask (build the "
                             "backbone with attn_type='linear_angular', aux_branch=True)")

    def before_train(self, runner) -> None:
        model = self._model(runner)
        if 'parse_losses' in model.__dict__:  # already wrapped (e.g. a second run)
            return
        original = model.parse_losses
        weight = self.weight

        @functools.wraps(original)
        def parse_losses(losses):
            losses = dict(losses)
            losses['loss_aux_mask'] = weight * aux_regularizer(model)
            return original(losses)

        model.parse_losses = parse_losses
        self._patched = model

    def after_train(self, runner) -> None:
        if self._patched is not None:
            self._patched.__dict__.pop('parse_losses', None)
            self._patched = None
