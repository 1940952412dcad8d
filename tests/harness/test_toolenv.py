"""The shop tool environment: each tool, errors as data, state transitions, schemas."""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from harness.tools.environment import TOOL_HANDLERS, ToolEnvironment
from harness.tools.schemas import TOOL_SCHEMAS

SHOP_STATE: dict = {
    "customers": {
        "C-1001": {"customer_id": "C-1001", "name": "Ana Berg", "email": "ana@x.io", "tier": "gold"}
    },
    "orders": {
        "O-10001": {
            "order_id": "O-10001",
            "customer_id": "C-1001",
            "status": "shipped",
            "total": 30.5,
            "currency": "EUR",
            "items": ["P-101", "P-102"],
        }
    },
    "products": {
        "P-101": {"product_id": "P-101", "name": "oak desk lamp", "price": 20.0},
        "P-102": {"product_id": "P-102", "name": "steel desk lamp", "price": 10.5},
        "P-103": {"product_id": "P-103", "name": "wool scarf", "price": 8.0},
    },
    "weather": {"Telmar": {"temp_c": 10, "condition": "rainy"}},
    "rates": {"USD": 1.0, "EUR": 0.5, "GBP": 0.8, "JPY": 150.0},
}


@pytest.fixture
def shop_state() -> dict:
    return copy.deepcopy(SHOP_STATE)


def test_each_tool_on_a_small_state(shop_state: dict) -> None:
    env = ToolEnvironment(shop_state)
    assert env.call("lookup_customer", {"email": "ANA@x.io"}) == {
        "customer_id": "C-1001",
        "name": "Ana Berg",
        "tier": "gold",
    }
    assert env.call("get_order", {"order_id": "O-10001"})["total"] == 30.5
    assert env.call("search_products", {"query": "lamp"})["results"][0]["product_id"] == "P-102"
    assert env.call("search_products", {"query": "lamp", "max_price": 5})["results"] == []
    assert env.call("get_weather", {"city": "Telmar"})["temperature"] == 10
    assert env.call("get_weather", {"city": "telmar", "unit": "fahrenheit"})["temperature"] == 50.0
    assert env.call("convert_currency", {"amount": 10, "source": "EUR", "target": "USD"})["converted"] == 20.0
    assert env.call("add_to_cart", {"product_id": "P-103", "quantity": 2}) == {
        "cart": [{"product_id": "P-103", "quantity": 2}],
        "cart_total": 16.0,
    }
    ticket = {
        "customer_id": "C-1001",
        "priority": "high",
        "subject": "Late",
        "details": {"category": "shipping"},
    }
    assert env.call("create_ticket", ticket) == {"ticket_id": "T-1", "status": "open"}
    meeting = {"title": "Sync", "attendees": ["Ana"], "slot": {"day": "mon", "hour": 9}}
    assert env.call("schedule_meeting", meeting)["duration_minutes"] == 30
    assert "error" in env.call("schedule_meeting", meeting)  # the slot is taken now
    refund = env.call("issue_refund", {"order_id": "O-10001", "amount": 10, "reason": "late"})
    assert refund["refund_id"] == "R-1" and refund["amount"] == 10.0


@pytest.mark.parametrize(
    ("name", "arguments"),
    [
        ("no_such_tool", {}),
        ("get_order", {}),
        ("get_order", {"order_id": 17}),
        ("get_order", {"order_id": "O-404"}),
        ("get_order", {"order_id": "O-10001", "extra": 1}),
        ("lookup_customer", {"email": "nobody@x.io"}),
        ("issue_refund", {"order_id": "O-10001", "amount": 31, "reason": "late"}),
        ("issue_refund", {"order_id": "O-10001", "amount": 5, "reason": "bored"}),
        ("add_to_cart", {"product_id": "P-101", "quantity": 0}),
        ("add_to_cart", {"product_id": "P-999", "quantity": 1}),
        ("create_ticket", {"customer_id": "C-1001", "priority": "high", "subject": "x", "details": {}}),
        ("create_ticket", {"customer_id": "C-9", "priority": "high", "subject": "x"}),
        ("get_weather", {"city": "Atlantis"}),
        ("schedule_meeting", {"title": "x", "attendees": [], "slot": {"day": "mon", "hour": 9}}),
        ("schedule_meeting", {"title": "x", "attendees": ["a"], "slot": {"day": "sat", "hour": 9}}),
        ("convert_currency", {"amount": 1, "source": "USD", "target": "XYZ"}),
        ("get_order", "not json"),
        ("get_order", ["O-10001"]),
    ],
)
def test_bad_calls_return_an_error_dict(shop_state: dict, name: str, arguments: object) -> None:
    env = ToolEnvironment(shop_state)
    result = env.call(name, arguments)  # type: ignore[arg-type]
    assert set(result) == {"error"}
    assert env.state() == ToolEnvironment(shop_state).state()


@settings(max_examples=150, deadline=None)
@given(
    name=st.sampled_from(sorted(TOOL_SCHEMAS)),
    arguments=st.dictionaries(
        st.sampled_from(["email", "order_id", "amount", "reason", "quantity", "slot", "city", "unit", "x"]),
        st.one_of(
            st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5), st.lists(st.integers())
        ),
    ),
)
def test_arbitrary_arguments_never_raise(name: str, arguments: dict) -> None:
    result = ToolEnvironment(SHOP_STATE).call(name, arguments)
    json.dumps(result, allow_nan=False)


def test_multi_step_trajectory_changes_state(shop_state: dict) -> None:
    env = ToolEnvironment(shop_state)
    customer = env.call("lookup_customer", {"email": "ana@x.io"})
    env.call("create_ticket", {"customer_id": customer["customer_id"], "priority": "low", "subject": "Hi"})
    order = env.call("get_order", {"order_id": "O-10001"})
    env.call("issue_refund", {"order_id": order["order_id"], "amount": order["total"], "reason": "damaged"})
    found = env.call("search_products", {"query": "scarf"})["results"][0]
    env.call("add_to_cart", {"product_id": found["product_id"], "quantity": 1})
    env.call("add_to_cart", {"product_id": found["product_id"], "quantity": 2})
    state = env.state()
    assert state["tickets"] == [
        {"ticket_id": "T-1", "customer_id": "C-1001", "priority": "low", "subject": "Hi", "details": None}
    ]
    assert state["refunds"] == [
        {"refund_id": "R-1", "order_id": "O-10001", "amount": 30.5, "reason": "damaged"}
    ]
    assert state["orders"]["O-10001"]["status"] == "refunded"
    assert state["cart"] == [{"product_id": "P-103", "quantity": 3}]
    assert "error" in env.call("issue_refund", {"order_id": "O-10001", "amount": 1, "reason": "late"})
    state["cart"].clear()  # state() is a copy
    assert env.state()["cart"] == [{"product_id": "P-103", "quantity": 3}]


def _walk(schema: dict, required: bool = True):
    """Yield (subschema, is_required) for every property schema below `schema`."""
    yield schema, required
    for key, sub in schema.get("properties", {}).items():
        yield from _walk(sub, key in schema.get("required", []))
    if "items" in schema:
        yield from _walk(schema["items"])


def test_schemas_are_valid_and_cover_every_kind_of_parameter() -> None:
    assert TOOL_HANDLERS.keys() == TOOL_SCHEMAS.keys() and len(TOOL_SCHEMAS) >= 7
    kinds: set[str] = set()
    for name, tool in TOOL_SCHEMAS.items():
        function = tool["function"]
        assert tool["type"] == "function" and function["name"] == name
        assert len(function["description"].split()) <= 8
        parameters = function["parameters"]
        Draft202012Validator.check_schema(parameters)
        assert parameters["additionalProperties"] is False
        for sub, required in list(_walk(parameters))[1:]:
            kinds.add(sub.get("type", "?"))
            kinds |= {"enum"} if "enum" in sub else set()
            kinds |= {"optional"} if not required else set()
            if sub.get("type") == "object":
                assert sub["additionalProperties"] is False
    assert {"string", "number", "integer", "enum", "object", "array", "optional"} <= kinds


def test_shipped_tool_schemas_file_is_the_schemas_in_their_order() -> None:
    """GPTQ's chat calibration reads the schemas from the shipped tools.json. The chat template
    renders them as given, so key order is part of what the model sees: the file must be
    TOOL_SCHEMAS with its order (json.dumps without sort_keys), or calibration tokens change."""
    from quantgate.core.shipped import shipped_root

    shipped = (shipped_root() / "data" / "tinyk2" / "tools.json").read_text()
    assert json.dumps(json.loads(shipped)) == json.dumps(TOOL_SCHEMAS)
