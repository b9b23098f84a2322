"""Where the fan-out work runs: on this machine's cores, or on a Dask cluster (``compute`` in params).

The fan-out points (GARCH fits, walk-forward blocks, month-end portfolio estimates, sweep
batches, analyst requests) hand their independent tasks to `map_tasks` (or `imap_tasks`, which
yields the results one by one). Results come back in the order of the items and are the same
whatever the backend and the number of workers: each task is the same function on the same
inputs, run on one thread (Dask's worker processes get ``OMP_NUM_THREADS=1`` and its siblings, as
the fan-out functions ask of themselves with ``threadpool_limits(1)``).

Backends (`ComputeConfig`):

- ``local``: joblib, with the caller's ``n_jobs`` processes (1: in this process, in order).
- ``dask``: a `distributed.Client`. Without ``address`` a ``LocalCluster`` of ``n_workers``
  single-threaded processes is started on first use and closed with the context that chose it
  (or when the process exits); with ``address`` the client connects to that scheduler (started
  by dask-jobqueue, Kubernetes, a cloud service or ``dask scheduler``) and never shuts it down.
  The dashboard link is printed once per connection.

How a process picks its backend: `use_backend(config)` for a block of code (the tests, the
pipeline), or `configure(config)` for the rest of the process (a stage's kernel). Nothing
chosen, the environment decides: `ADDRESS_ENV` (``SPARTAN_DASK_ADDRESS``), which ``spartan run``
sets for its kernels when it runs on Dask, means ``dask`` at that address; otherwise ``local``.
A ``dask`` choice without an address also takes `ADDRESS_ENV` when it is set, so every stage of a
run shares the run's one cluster rather than starting its own.
"""

from __future__ import annotations

import atexit
import os
import reprlib
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

from pydantic import Field, model_validator

from research_lib.errors import ConfigError
from research_lib.params import StrictModel
from research_lib.progress import progress

__all__ = ["ADDRESS_ENV", "ComputeConfig", "cluster_for_run", "configure", "current_backend", "imap_tasks",
           "map_tasks", "parallelism", "use_backend"]

ADDRESS_ENV = "SPARTAN_DASK_ADDRESS"  # a Dask scheduler's address, set by `spartan run` for its kernels
CONNECT_TIMEOUT_S = 10  # how long a scheduler given by address may take to answer
TASKS_PER_THREAD = 4  # Dask: tasks in flight (or done, waiting their turn) per worker thread


class ComputeConfig(StrictModel):
    """``compute``: where fan-out work runs. Speed only: results do not depend on it."""

    backend: Literal["local", "dask"] = Field("local", description="local: this machine's processes (joblib); "
                                              "dask: a Dask cluster (a LocalCluster unless address is given)")
    address: str | None = Field(None, min_length=1, description="scheduler to connect to, e.g. tcp://10.0.0.5:8786 "
                                "(dask-jobqueue, Kubernetes, a cloud service); null: start a LocalCluster")
    n_workers: int | None = Field(None, ge=1, description="LocalCluster worker processes; null: one per core")

    @model_validator(mode="after")
    def _address_needs_dask(self) -> ComputeConfig:
        if self.address is not None and self.backend != "dask":
            raise ValueError(f"address {self.address!r} is set but backend is {self.backend!r}; "
                             "set compute.backend: dask to use a Dask scheduler")
        return self


# ---------------------------------------------------------------- choosing the backend

_chosen: ComputeConfig | None = None  # set by configure / use_backend; None: the environment decides
_session: _DaskSession | None = None  # the live Dask connection (and the cluster it started), if any


def configure(config: ComputeConfig | None) -> None:
    """Use ``config`` for the fan-out work of the rest of this process (None: back to the default)."""
    global _chosen
    _chosen = config


@contextmanager
def use_backend(config: ComputeConfig) -> Iterator[None]:
    """Use ``config`` inside the ``with`` block. A Dask connection opened inside it is closed at its
    end (with the LocalCluster it started), also on an error or an interrupt."""
    global _chosen
    previous, session_before = _chosen, _session
    _chosen = config
    try:
        yield
    finally:
        _chosen = previous
        if _session is not None and _session is not session_before:
            _close_session()


def current_backend() -> ComputeConfig:
    """The backend the next fan-out uses (see the module docstring for how it is chosen)."""
    from_env = os.environ.get(ADDRESS_ENV) or None
    if _chosen is None:
        return ComputeConfig(backend="dask", address=from_env) if from_env else ComputeConfig()
    if _chosen.backend == "dask" and _chosen.address is None and from_env:
        return _chosen.model_copy(update={"address": from_env})
    return _chosen


@contextmanager
def cluster_for_run(config: ComputeConfig) -> Iterator[None]:
    """For ``spartan run``: with ``backend: dask``, connect (or start the LocalCluster) once, here,
    and give its address to the stages' kernels in `ADDRESS_ENV`; closed when the run ends,
    however it ends. With ``backend: local``, nothing."""
    if config.backend != "dask":
        yield
        return
    before = os.environ.get(ADDRESS_ENV)
    with use_backend(config):
        os.environ[ADDRESS_ENV] = _dask_client().scheduler.address
        try:
            yield
        finally:
            os.environ.pop(ADDRESS_ENV, None)
            if before is not None:
                os.environ[ADDRESS_ENV] = before


# ---------------------------------------------------------------- running tasks

def map_tasks(fn: Callable, items: Iterable, *, shared: dict[str, Any] | None = None, n_jobs: int = 1,
              desc: str | None = None, unit: str = "task") -> list:
    """``[fn(item, **shared) for item in items]``, run on the current backend.

    Parameters
    ----------
    fn : a module-level function (it is sent to other processes).
    items : the tasks' first arguments: small (positions, parameters, a sample).
    shared : keyword arguments common to every task (frames, a model): sent to Dask once.
    n_jobs : joblib processes for the local backend (1: in this process; -1: one per core).
        Dask uses its workers instead.
    desc, unit : label a progress bar of the tasks as they come back (None: no bar).

    Raises
    ------
    Whatever a task raises, with a note naming the task and its item; ConfigError when the
    Dask scheduler given by address does not answer.
    """
    return list(imap_tasks(fn, items, shared=shared, n_jobs=n_jobs, desc=desc, unit=unit))


def imap_tasks(fn: Callable, items: Iterable, *, shared: dict[str, Any] | None = None, n_jobs: int = 1,
               desc: str | None = None, unit: str = "task") -> Iterator:
    """`map_tasks` one result at a time, in the order of ``items``: only a few results are held
    at once (Dask: `TASKS_PER_THREAD` per worker thread; joblib: its pre-dispatch)."""
    items = list(items)
    if not items:  # nothing to do: no cluster started for it
        return iter(())
    label = desc or getattr(fn, "__qualname__", "task")
    if _uses_dask():
        results = _dask_results(_dask_client(), fn, items, shared or {}, label)
    else:
        from joblib import Parallel, delayed  # loaded by the work that fans out

        n_jobs = 1 if _in_dask_task() else n_jobs  # a Dask worker's own processes may not have children
        results = Parallel(n_jobs=n_jobs, return_as="generator")(
            delayed(_run_task)(fn, item, f"{label} task {number}", shared or {}) for number, item in enumerate(items))
    return progress(results, total=len(items), desc=desc, unit=unit) if desc else iter(results)


def parallelism(n_jobs: int = 1) -> int:
    """How many tasks run at once: the Dask cluster's worker threads, or joblib's count for ``n_jobs``."""
    if _uses_dask():
        return max(1, sum(_dask_client().nthreads().values()))
    from joblib import effective_n_jobs

    return effective_n_jobs(n_jobs)  # n_jobs=-1 is every core, as in scikit-learn


def _run_task(fn: Callable, item, label: str, shared: dict[str, Any]):
    """``fn(item, **shared)``; an exception it raises gets a note naming the task and its item."""
    try:
        return fn(item, **shared)
    except Exception as error:
        error.add_note(f"raised by {label}, item {reprlib.repr(item)}")
        raise


def _uses_dask() -> bool:
    """Whether fan-outs go to Dask now: the backend says so and this is not already a Dask task
    (a task fanning out again runs its tasks itself, one after the other)."""
    return current_backend().backend == "dask" and not _in_dask_task()


def _in_dask_task() -> bool:
    if "distributed" not in sys.modules:
        return False
    from distributed import get_worker

    try:
        get_worker()
    except ValueError:
        return False
    return True


def _dask_results(client, fn: Callable, items: list, shared: dict[str, Any], label: str) -> Iterator:
    """The results of ``fn`` on ``items`` from Dask, in order, with a bounded number in flight."""
    # Sent once, each as one object (scatter would split a list or a dict into many).
    shared_futures = {name: client.scatter([value], hash=False)[0] for name, value in shared.items()}
    window = TASKS_PER_THREAD * max(1, sum(client.nthreads().values()))
    pending: deque = deque()
    try:
        for number, item in enumerate(items):
            pending.append(client.submit(_run_task, fn, item, f"{label} task {number}", shared_futures, pure=False))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:  # an error, or a caller that stopped early: nothing is left running for it
        client.cancel([*pending, *shared_futures.values()])


# ---------------------------------------------------------------- the Dask connection

class _DaskSession:
    """A client for ``config``, and the LocalCluster it started (None when it connected by address)."""

    def __init__(self, config: ComputeConfig):
        from distributed import Client, LocalCluster

        self.config, self.cluster = config, None
        if config.address is None:
            from joblib import cpu_count

            self.cluster = LocalCluster(n_workers=config.n_workers or cpu_count(), threads_per_worker=1,
                                        processes=True, dashboard_address=":0")
            self.client = Client(self.cluster, set_as_default=False)
        else:
            try:
                self.client = Client(config.address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
            except (OSError, TimeoutError, ValueError) as error:
                raise ConfigError(
                    f"compute.address {config.address!r}: no Dask scheduler answered within {CONNECT_TIMEOUT_S} s "
                    f"({error}). Check the address (the scheduler prints it, e.g. tcp://10.0.0.5:8786) and that "
                    "the scheduler is running; or leave compute.address empty to start a LocalCluster, or set "
                    "compute.backend: local.") from error
        self.address = self.client.scheduler.address
        print(self.describe())

    def serves(self, config: ComputeConfig) -> bool:
        """Whether ``config`` is this connection (its own settings, or its scheduler's address)."""
        return config == self.config or (config.address is not None and config.address == self.address)

    def describe(self) -> str:
        workers = len(self.client.nthreads())
        where = "a LocalCluster started here" if self.cluster is not None else "the scheduler"
        dashboard = self.client.dashboard_link if self._has_dashboard() else "none (pip install bokeh to get one)"
        return f"Dask: {workers} worker(s) on {where} at {self.client.scheduler.address}; dashboard: {dashboard}"

    def _has_dashboard(self) -> bool:
        return "dashboard" in self.client.scheduler_info(n_workers=0).get("services", {})

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:  # a scheduler given by address belongs to whoever started it
            self.cluster.close()


def _dask_client():
    """The client for the current backend, connecting (or starting a LocalCluster) on first use."""
    global _session
    config = current_backend()
    if _session is not None and not _session.serves(config):
        _close_session()
    if _session is None:
        _session = _DaskSession(config)
    return _session.client


def _close_session() -> None:
    global _session
    session, _session = _session, None
    if session is not None:
        session.close()


atexit.register(_close_session)
