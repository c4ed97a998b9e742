"""Errors shared by the package's input checks."""
from typing import Callable, Optional, Sequence, Tuple, Union


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


def seed_list_error(seeds: Sequence[int]) -> Optional[str]:
    """What is wrong with a list of seeds, or ``None``: a study's seeds must be distinct
    integers >= 0, at least one (the shared check of ``--seeds``-like arguments)."""
    seeds = list(seeds)
    if (not seeds or len(set(seeds)) != len(seeds)
            or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds)):
        return f'must be distinct integers >= 0, got {seeds}'
    return None
