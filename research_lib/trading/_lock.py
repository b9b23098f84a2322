"""One trade of a strategy at a time: the strategy's trade lock, ``data/locks/trade-<strategy>.lock``."""

from __future__ import annotations

import os
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

from research_lib._io import flock, lock_holder_pid, lock_path, now_utc
from research_lib._kernel_guard import command_pid
from research_lib.trading._errors import TradeLocked, TradeLockUnusable

_LOCKS_HELD: set[Path] = set()  # the trade locks this process holds


@contextmanager
def trade_lock(strategy: str) -> Iterator[None]:
    """Hold the strategy's trade lock (``data/locks/trade-<strategy>.lock``, an exclusive
    ``flock`` released when the holder ends, however) for the block.

    A strategy's trades run one at a time: two at once would move the simulated market under
    each other and mark each other's cycle interrupted. A process re-entering the lock it holds,
    and a notebook kernel whose command holds it for it (`spartan trade` runs notebook 07), go
    on without taking it again.

    Raises
    ------
    TradeLocked
        another process holds it; nothing was run.
    """
    path = lock_path(f"trade-{strategy}")
    if path in _LOCKS_HELD:
        yield
        return
    with ExitStack() as held:
        try:
            fd = held.enter_context(flock(path, blocking=False, holder=f"pid {os.getpid()} since {now_utc()}"))
        except OSError as err:
            raise TradeLockUnusable(f"the trade lock of {strategy}, {path}, cannot be opened ({type(err).__name__}: "
                                    f"{err.strerror or err}); it must be a file this user can write: remove what is "
                                    f"there (or fix its permissions) and run spartan trade again. Nothing was "
                                    "run.") from None
        holder = None if fd is not None else lock_holder_pid(path)
        if fd is None and (holder is None or holder != command_pid()):
            raise TradeLocked(f"another spartan trade of {strategy} is running (pid {holder or 'unknown'}); wait for "
                              f"it or stop it (its lock: {path}).")
        _LOCKS_HELD.add(path)
        try:
            yield
        finally:
            _LOCKS_HELD.discard(path)
