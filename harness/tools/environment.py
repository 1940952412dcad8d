"""A deterministic, stateful shop/support-desk environment for tool-use episodes.

The state is one JSON-serialisable dict:

    customers: {customer_id: {customer_id, name, email, tier}}
    orders:    {order_id: {order_id, customer_id, status, total, currency, items: [product_id]}}
    products:  {product_id: {product_id, name, price}}
    weather:   {city: {temp_c: int, condition: str}}
    rates:     {currency: units per 1 USD}
    refunds:   [{refund_id, order_id, amount, reason}]          (mutable)
    tickets:   [{ticket_id, customer_id, priority, subject, details}]  (mutable)
    cart:      [{product_id, quantity}]                          (mutable)
    meetings:  [{meeting_id, title, attendees, slot, duration_minutes}]  (mutable)

Model output is only ever read as data: arguments are validated against the
tool's JSON schema and dispatched through the explicit `TOOL_HANDLERS` table.
An episode is graded by the final `state()`, tau-bench style.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

from jsonschema import Draft202012Validator

from harness.tools.schemas import TOOL_SCHEMAS

State = dict[str, Any]
ToolResult = dict[str, Any]
ToolHandler = Callable[[State, dict[str, Any]], ToolResult]

MUTABLE_COLLECTIONS: tuple[str, ...] = ("refunds", "tickets", "cart", "meetings")
SEARCH_RESULT_LIMIT = 5
DEFAULT_MEETING_MINUTES = 30


def money(amount: float) -> float:
    """Round to cents; every amount the environment stores or returns goes through here."""
    return round(float(amount), 2)


def _error(message: str) -> ToolResult:
    return {"error": message}


def lookup_customer(state: State, args: dict[str, Any]) -> ToolResult:
    email = args["email"].strip().lower()
    for customer in state["customers"].values():
        if customer["email"].lower() == email:
            return {k: customer[k] for k in ("customer_id", "name", "tier")}
    return _error(f"no customer with email {args['email']}")


def get_order(state: State, args: dict[str, Any]) -> ToolResult:
    order = state["orders"].get(args["order_id"])
    if order is None:
        return _error(f"unknown order_id {args['order_id']}")
    return copy.deepcopy(order)


def _refunded_so_far(state: State, order_id: str) -> float:
    return money(sum(r["amount"] for r in state["refunds"] if r["order_id"] == order_id))


def issue_refund(state: State, args: dict[str, Any]) -> ToolResult:
    order = state["orders"].get(args["order_id"])
    if order is None:
        return _error(f"unknown order_id {args['order_id']}")
    amount = money(args["amount"])
    refundable = money(order["total"] - _refunded_so_far(state, order["order_id"]))
    if amount <= 0 or amount > refundable:
        return _error(f"amount must be between 0.01 and {refundable:.2f}")
    refund = {
        "refund_id": f"R-{len(state['refunds']) + 1}",
        "order_id": order["order_id"],
        "amount": amount,
        "reason": args["reason"],
    }
    state["refunds"].append(refund)
    if amount == refundable:
        order["status"] = "refunded"
    return {**refund, "currency": order["currency"], "status": "approved"}


def create_ticket(state: State, args: dict[str, Any]) -> ToolResult:
    if args["customer_id"] not in state["customers"]:
        return _error(f"unknown customer_id {args['customer_id']}")
    details = args.get("details")
    if details is not None and "order_id" in details and details["order_id"] not in state["orders"]:
        return _error(f"unknown order_id {details['order_id']}")
    ticket = {
        "ticket_id": f"T-{len(state['tickets']) + 1}",
        "customer_id": args["customer_id"],
        "priority": args["priority"],
        "subject": args["subject"],
        "details": copy.deepcopy(details),
    }
    state["tickets"].append(ticket)
    return {"ticket_id": ticket["ticket_id"], "status": "open"}


def search_products(state: State, args: dict[str, Any]) -> ToolResult:
    query = args["query"].strip().lower()
    max_price = args.get("max_price")
    matches = [
        p
        for p in state["products"].values()
        if query in p["name"].lower() and (max_price is None or p["price"] <= max_price)
    ]
    matches.sort(key=lambda p: (p["price"], p["product_id"]))
    return {"results": [dict(p) for p in matches[:SEARCH_RESULT_LIMIT]]}


def add_to_cart(state: State, args: dict[str, Any]) -> ToolResult:
    product_id = args["product_id"]
    if product_id not in state["products"]:
        return _error(f"unknown product_id {product_id}")
    quantity = int(args["quantity"])
    for line in state["cart"]:
        if line["product_id"] == product_id:
            line["quantity"] += quantity
            break
    else:
        state["cart"].append({"product_id": product_id, "quantity": quantity})
    cart_total = sum(
        state["products"][line["product_id"]]["price"] * line["quantity"] for line in state["cart"]
    )
    return {"cart": copy.deepcopy(state["cart"]), "cart_total": money(cart_total)}


def get_weather(state: State, args: dict[str, Any]) -> ToolResult:
    city = args["city"].strip()
    weather = next((w for name, w in state["weather"].items() if name.lower() == city.lower()), None)
    if weather is None:
        return _error(f"no weather for city {city}")
    unit = args.get("unit", "celsius")
    temperature = weather["temp_c"] if unit == "celsius" else round(weather["temp_c"] * 9 / 5 + 32, 1)
    return {"city": city, "temperature": temperature, "unit": unit, "condition": weather["condition"]}


def schedule_meeting(state: State, args: dict[str, Any]) -> ToolResult:
    slot = {"day": args["slot"]["day"], "hour": int(args["slot"]["hour"])}
    if any(m["slot"] == slot for m in state["meetings"]):
        return _error(f"slot {slot['day']} {slot['hour']}:00 is taken")
    meeting = {
        "meeting_id": f"M-{len(state['meetings']) + 1}",
        "title": args["title"],
        "attendees": list(args["attendees"]),
        "slot": slot,
        "duration_minutes": int(args.get("duration_minutes", DEFAULT_MEETING_MINUTES)),
    }
    state["meetings"].append(meeting)
    return copy.deepcopy(meeting)


def convert_currency(state: State, args: dict[str, Any]) -> ToolResult:
    rates = state["rates"]
    source, target = args["source"], args["target"]
    if source not in rates or target not in rates:
        return _error(f"no rate for {source} or {target}")
    converted = money(args["amount"] / rates[source] * rates[target])
    return {"amount": args["amount"], "source": source, "target": target, "converted": converted}


TOOL_HANDLERS: dict[str, ToolHandler] = {
    "lookup_customer": lookup_customer,
    "get_order": get_order,
    "issue_refund": issue_refund,
    "create_ticket": create_ticket,
    "search_products": search_products,
    "add_to_cart": add_to_cart,
    "get_weather": get_weather,
    "schedule_meeting": schedule_meeting,
    "convert_currency": convert_currency,
}
assert TOOL_HANDLERS.keys() == TOOL_SCHEMAS.keys(), "every schema needs a handler"

_VALIDATORS: dict[str, Draft202012Validator] = {
    name: Draft202012Validator(schema["function"]["parameters"]) for name, schema in TOOL_SCHEMAS.items()
}


def argument_errors(name: str, arguments: Any) -> list[str]:
    """Schema violations of `arguments` for tool `name` (empty when valid)."""
    return [e.message for e in _VALIDATORS[name].iter_errors(arguments)]


class ToolEnvironment:
    """Executes tool calls against a private copy of an initial state."""

    def __init__(self, initial_state: State) -> None:
        self._state: State = copy.deepcopy(initial_state)
        for collection in MUTABLE_COLLECTIONS:
            self._state.setdefault(collection, [])

    def call(self, name: str, arguments: dict[str, Any] | str) -> ToolResult:
        """Run one tool; any failure comes back as {"error": ...}, never as an exception."""
        handler = TOOL_HANDLERS.get(name)
        if handler is None:
            return _error(f"unknown tool {name!r}; known tools: {', '.join(TOOL_HANDLERS)}")
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError as exc:
                return _error(f"arguments are not valid JSON: {exc.msg}")
        try:
            json.dumps(arguments, allow_nan=False)
        except (TypeError, ValueError) as exc:
            return _error(f"arguments are not plain JSON: {exc}")
        errors = argument_errors(name, arguments)
        if errors:
            return _error(f"invalid arguments for {name}: {'; '.join(errors)}")
        return handler(self._state, copy.deepcopy(arguments))

    def state(self) -> State:
        """A deep copy of the current state."""
        return copy.deepcopy(self._state)
