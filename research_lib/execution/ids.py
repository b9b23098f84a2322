"""Client order ids: 1 to 48 characters, Alpaca's limit, which every broker here keeps (the simulated
one too). Here, below the brokers, because a schedule derives its children's ids from the parent's."""

from __future__ import annotations

MAX_CLIENT_ORDER_ID = 48


def check_client_order_id(client_order_id: str) -> str:
    """Refuse an id Alpaca would refuse: empty, or longer than 48 characters."""
    if not client_order_id or len(client_order_id) > MAX_CLIENT_ORDER_ID:
        raise ValueError(f"client_order_id {client_order_id!r} has {len(client_order_id or '')} characters; "
                         f"it must have 1 to {MAX_CLIENT_ORDER_ID}")
    return client_order_id
