"""Progressive re-tokenization (As-ViT, Chen et al. ICLR 2022) as an mmengine hook."""
import bisect
import logging
from typing import List, Sequence, Tuple

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from torch import nn

from ..registry import HOOKS

Schedule = Sequence[Tuple[int, int]]


def check_schedule(schedule: Schedule) -> List[Tuple[int, int]]:
    """``[(milestone, factor), ...]`` starting at 0, strictly increasing, positive int factors.

    Raises ``ValueError`` naming the field and the offending value.
    """
    if isinstance(schedule, (str, bytes)) or not isinstance(schedule, Sequence) or not schedule:
        raise ValueError(f'schedule must be a non-empty list of (milestone, factor) pairs, '
                         f'got {schedule!r}')
    pairs = []
    for i, entry in enumerate(schedule):
        if isinstance(entry, (str, bytes)) or not isinstance(entry, Sequence) or len(entry) != 2:
            raise ValueError(f'schedule[{i}] must be a (milestone, factor) pair, got {entry!r}')
        milestone, factor = entry
        for name, value, low in (('milestone', milestone, 0), ('factor', factor, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                kind = 'a non-negative' if low == 0 else 'a positive'
                raise ValueError(f'schedule[{i}] {name} must be {kind} int, got {value!r} '
                                 f'in schedule={list(schedule)!r}')
        if i == 0 and milestone != 0:
            raise ValueError(f'schedule must start at milestone 0, got {milestone!r} '
                             f'in schedule={list(schedule)!r}')
        if pairs and milestone <= pairs[-1][0]:
            raise ValueError(f'schedule milestones must be strictly increasing, got '
                             f'{milestone!r} after {pairs[-1][0]!r} in '
                             f'schedule={list(schedule)!r}')
        pairs.append((milestone, factor))
    return pairs


@HOOKS.register_module()
class ProgressiveTokenizationHook(Hook):
    """Train with coarse tokens early, full tokens later; always evaluate at full tokens.

    Before every training iteration the backbone's tokenizer gets the factor of the last
    milestone reached (``runner.epoch`` when ``by_epoch``, else ``runner.iter``) through its
    ``set_token_stride`` (:class:`~mmvitscale.models.ScaledViT`, ``ScaledPiT``,
    ``ScaledVideoViT``). Validation, testing and the end of training use factor 1. The factor
    is stateless (derived from the progress counter), so resuming works unchanged.

    Args:
        schedule: ``[(milestone, factor), ...]``; e.g. ``[(0, 2), (50, 1)]`` trains with
            stride-2 tokens (4x fewer) for 50 epochs, then with the full token grid.
        by_epoch: milestones count epochs (True) or iterations (False).
    """

    priority = 'NORMAL'

    def __init__(self, schedule: Schedule = ((0, 2), (1, 1)), by_epoch: bool = True) -> None:
        self.schedule = check_schedule(schedule)
        self.by_epoch = bool(by_epoch)
        self._milestones = [m for m, _ in self.schedule]
        self._scheduled = 1  # factor the schedule last asked for (for the log)
        if self.schedule[-1][1] != 1:
            print_log(f'ProgressiveTokenizationHook: schedule={self.schedule} never returns to '
                      'factor 1; evaluation still runs at factor 1', logger='current',
                      level=logging.WARNING)

    def factor_at(self, progress: int) -> int:
        """Scheduled factor at an epoch (``by_epoch``) or iteration."""
        return self.schedule[bisect.bisect_right(self._milestones, progress) - 1][1]

    @staticmethod
    def backbone_of(model: nn.Module) -> nn.Module:
        """``model.backbone`` (wrappers unwrapped), or the model itself if it re-tokenizes."""
        if is_model_wrapper(model):
            model = model.module
        backbone = getattr(model, 'backbone', model)
        if not callable(getattr(backbone, 'set_token_stride', None)):
            raise TypeError(f'ProgressiveTokenizationHook needs a backbone with '
                            f'set_token_stride (ScaledViT, ScaledPiT, ScaledVideoViT), got '
                            f'{type(backbone).__name__}')
        return backbone

    def _apply(self, runner, factor: int) -> None:
        backbone = self.backbone_of(runner.model)
        if getattr(backbone, 'token_stride', 1) != factor:
            backbone.set_token_stride(factor)

    def _where(self, runner) -> str:
        return f'epoch {runner.epoch}, iter {runner.iter}'

    def before_run(self, runner) -> None:
        self.backbone_of(runner.model)  # fail before any work when the model cannot do it

    def before_train(self, runner) -> None:
        self._scheduled = 1

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        factor = self.factor_at(runner.epoch if self.by_epoch else runner.iter)
        if factor != self._scheduled:  # log schedule changes, not the evaluation switches
            runner.logger.info(f'ProgressiveTokenizationHook: token_stride '
                               f'{self._scheduled} -> {factor} ({self._where(runner)})')
            self._scheduled = factor
        self._apply(runner, factor)

    def before_val_epoch(self, runner) -> None:
        self._apply(runner, 1)

    def before_test_epoch(self, runner) -> None:
        self._apply(runner, 1)

    def after_train(self, runner) -> None:
        if self._scheduled != 1:
            runner.logger.info(f'ProgressiveTokenizationHook: token_stride {self._scheduled} '
                               f'-> 1 (end of training, {self._where(runner)})')
        self._scheduled = 1
        self._apply(runner, 1)
