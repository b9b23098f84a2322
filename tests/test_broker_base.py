"""The broker interface's own rules: client order ids Alpaca accepts, open statuses."""

from __future__ import annotations

import pytest

from research_lib.broker import MAX_CLIENT_ORDER_ID, BrokerOrder, check_client_order_id


def test_client_order_ids_are_one_to_48_characters():
    assert MAX_CLIENT_ORDER_ID == 48
    assert check_client_order_id("x" * 48) == "x" * 48
    for bad in ("", "x" * 49):
        with pytest.raises(ValueError, match=f"has {len(bad)} characters; it must have 1 to 48"):
            check_client_order_id(bad)


@pytest.mark.parametrize("status, is_open", [("new", True), ("accepted", True), ("partially_filled", True),
                                             ("filled", False), ("canceled", False), ("rejected", False),
                                             ("expired", False)])
def test_only_orders_that_can_still_fill_are_open(status, is_open):
    assert BrokerOrder("c1", "b1", "AAPL", "buy", 10.0, status).is_open is is_open
