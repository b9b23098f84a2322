"""The limits of the pre-trade risk layer: one strict, frozen model, saved with the run.

Fractions are of account equity (net liquidation value): ``max_weight=0.1`` is 10 % of
equity in one symbol. Loss limits are positive fractions: ``daily_loss_limit=0.02`` trips
on a day's loss of 2 % of equity or more.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from research_lib.errors import SpartanError
from research_lib.params import StrictModel


class RiskInputError(SpartanError, ValueError):
    """An input of the risk layer is malformed (not a rejected order: the call is wrong)."""


class RiskLimits(StrictModel):
    """Pre-trade and kill-switch limits (TRADING_SAFETY.md checks 5, 6, 7, 9 and 11)."""

    max_weight: float = Field(gt=0, description="largest |position value| / equity per symbol")
    max_gross_exposure: float = Field(gt=0, description="largest sum of |position value| / equity")
    max_net_exposure: float = Field(ge=0, description="largest |sum of position value| / equity")
    max_order_notional: float = Field(gt=0, description="largest order value, in account currency")
    max_order_quantity: float | None = Field(None, gt=0, description="largest order size in shares; null: no cap")
    max_adv_fraction: float = Field(gt=0, le=1, description="largest size of a symbol's orders in one check / "
                                    "average daily volume")
    fat_finger_band: float = Field(gt=0, lt=1, description="largest |limit price / reference - 1|")
    max_price_age_seconds: float = Field(gt=0, description="oldest reference price accepted")
    max_open_orders: int = Field(ge=0, description="largest number of open orders, counting new ones")
    max_daily_orders: int = Field(ge=0, description="largest number of orders sent in a session")
    allow_short: bool = Field(False, description="true: sells may open or grow a short (long-short books); "
                              "false: a sell never exceeds the position less open sells")
    daily_loss_limit: float = Field(gt=0, lt=1, description="day's loss / equity that moves the kill switch to REDUCING")
    drawdown_stop: float = Field(gt=0, lt=1, description="drawdown from peak equity that moves the kill switch to HALTED")

    @model_validator(mode="after")
    def _consistent(self) -> RiskLimits:
        if self.max_weight > self.max_gross_exposure:
            raise ValueError(f"max_weight {self.max_weight} exceeds max_gross_exposure {self.max_gross_exposure}; "
                             "lower max_weight or raise max_gross_exposure")
        if self.max_net_exposure > self.max_gross_exposure:
            raise ValueError(f"max_net_exposure {self.max_net_exposure} exceeds max_gross_exposure "
                             f"{self.max_gross_exposure}; net can never exceed gross, lower max_net_exposure")
        return self
