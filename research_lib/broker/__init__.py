"""Brokers: one interface (`Broker`), the offline simulated broker (the backtest's cost model, fill by fill)
and Alpaca's paper API through alpaca-py."""

from research_lib.broker._base import (MAX_CLIENT_ORDER_ID, OPEN_STATUSES, Account, Broker, BrokerError, BrokerOrder,
                                       BrokerUnavailable, Clock, DuplicateClientOrderId, InsufficientBuyingPower,
                                       OrderRejected, Position, RateLimited, UnknownOutcome, check_client_order_id)
from research_lib.broker._alpaca import AlpacaBroker
from research_lib.broker._sim import SimBroker

__all__ = ["MAX_CLIENT_ORDER_ID", "OPEN_STATUSES", "Account", "AlpacaBroker", "Broker", "BrokerError", "BrokerOrder",
           "BrokerUnavailable", "Clock", "DuplicateClientOrderId", "InsufficientBuyingPower", "OrderRejected",
           "Position", "RateLimited", "SimBroker", "UnknownOutcome", "check_client_order_id"]
