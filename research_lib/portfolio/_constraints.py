"""Portfolio constraints: one strict, frozen model, checked for feasibility before any solve.

Weights are fractions of equity: ``sum(w)`` is the net exposure, ``sum(|w|)`` the gross.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from research_lib.errors import SpartanError
from research_lib.params import StrictModel


class InfeasibleConstraintsError(SpartanError, ValueError):
    """No weights can meet the constraints (the message names them and their values)."""


class PortfolioConstraints(StrictModel):
    """Bounds, exposures and penalties of a portfolio optimization.

    Parameters
    ----------
    side : {"long_only", "long_short"}
        ``long_only`` forces ``min_weight >= 0`` (and so gross == net).
    max_weight : float
        Largest weight of any one asset.
    min_weight : float, optional
        Smallest weight of any one asset; default 0 when long-only, ``-max_weight`` when
        long-short.
    net_exposure : float
        ``sum(w)`` exactly: 1.0 fully invested, 0.0 market neutral (long-short only,
        efficient_risk / efficient_return only).
    max_gross_exposure : float, optional
        Long-short only: ``sum(|w|) <= max_gross_exposure`` (a cap: an equality on the gross
        is not convex). None: bounded by the weight bounds only.
    turnover_penalty : float
        Cost per unit of weight traded, ``k * sum(|w - w_prev|)`` added to the objective
        (needs ``previous_weights``), like ``pypfopt.objective_functions.transaction_cost``.
    l2_gamma : float
        ``gamma * sum(w**2)`` added to the objective (``pypfopt.objective_functions.L2_reg``):
        fewer zero weights.
    """

    side: Literal["long_only", "long_short"] = "long_only"
    max_weight: float = Field(1.0, gt=0, description="largest weight per asset")
    min_weight: float | None = Field(None, description="smallest weight per asset")
    net_exposure: float = Field(1.0, ge=0, description="sum of weights, exactly")
    max_gross_exposure: float | None = Field(None, gt=0, description="largest sum of |weights| (long-short)")
    turnover_penalty: float = Field(0.0, ge=0, description="objective cost per unit of weight traded")
    l2_gamma: float = Field(0.0, ge=0, description="L2 regularization strength")

    @model_validator(mode="after")
    def _consistent(self) -> PortfolioConstraints:
        if self.side == "long_only":
            if self.min_weight is not None and self.min_weight < 0:
                raise ValueError(f"min_weight is {self.min_weight} but side='long_only'; pass min_weight >= 0 "
                                 "or side='long_short'")
            if self.max_gross_exposure is not None:
                raise ValueError("max_gross_exposure only applies to side='long_short' (long-only gross equals "
                                 "net_exposure); drop it")
            if self.net_exposure == 0:
                raise ValueError("net_exposure is 0 but side='long_only'; a long-only book needs net_exposure > 0")
        if self.lower_bound > self.max_weight:
            raise ValueError(f"min_weight {self.lower_bound} exceeds max_weight {self.max_weight}; lower min_weight")
        if self.max_gross_exposure is not None and self.max_gross_exposure < self.net_exposure:
            raise ValueError(f"max_gross_exposure {self.max_gross_exposure} is below net_exposure "
                             f"{self.net_exposure}; gross can never be below net, raise max_gross_exposure")
        return self

    @property
    def lower_bound(self) -> float:
        """The smallest weight per asset, defaults resolved."""
        if self.min_weight is not None:
            return self.min_weight
        return 0.0 if self.side == "long_only" else -self.max_weight

    def check_feasible(self, n_assets: int) -> None:
        """Raise `InfeasibleConstraintsError` when ``n_assets`` weights cannot meet the bounds."""
        low, high, net = self.lower_bound, self.max_weight, self.net_exposure
        if high * n_assets < net - 1e-12:
            raise InfeasibleConstraintsError(
                f"max_weight * n_assets = {high} x {n_assets} = {high * n_assets:g} is below net_exposure={net}; "
                f"raise max_weight to at least {net / n_assets:g} or add assets")
        if low * n_assets > net + 1e-12:
            raise InfeasibleConstraintsError(
                f"min_weight * n_assets = {low} x {n_assets} = {low * n_assets:g} exceeds net_exposure={net}; "
                f"lower min_weight to at most {net / n_assets:g}")
