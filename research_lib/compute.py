"""Where the fan-out work runs: on this machine's cores, or on a Dask cluster (``compute`` in params).

The fan-out points (GARCH fits, walk-forward blocks, month-end portfolio constructions, sweep
batches, analyst requests) hand their independent tasks to one function here; results are the
same whatever the backend and the number of workers.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from research_lib.params import StrictModel

__all__ = ["ComputeConfig"]


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
