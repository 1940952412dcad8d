"""OpenAI function schemas of the shop/support-desk tools.

Descriptions are one short sentence: the schemas are put into a tiny model's
context, so every token counts.
"""

from __future__ import annotations

from typing import Any

CURRENCIES: list[str] = ["USD", "EUR", "GBP", "JPY"]
REFUND_REASONS: list[str] = ["damaged", "late", "wrong_item"]
TICKET_PRIORITIES: list[str] = ["low", "normal", "high"]
TICKET_CATEGORIES: list[str] = ["billing", "shipping", "product"]
TEMPERATURE_UNITS: list[str] = ["celsius", "fahrenheit"]
WEEKDAYS: list[str] = ["mon", "tue", "wed", "thu", "fri"]
FIRST_MEETING_HOUR = 8
LAST_MEETING_HOUR = 17


def _function(name: str, description: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    """One OpenAI tool schema with a closed parameter object."""
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": properties,
                "required": required,
                "additionalProperties": False,
            },
        },
    }


_ID = {"type": "string", "minLength": 1}

TOOL_SCHEMAS: dict[str, dict[str, Any]] = {
    "lookup_customer": _function(
        "lookup_customer",
        "Find a customer by email.",
        {"email": {"type": "string", "minLength": 3}},
        ["email"],
    ),
    "get_order": _function(
        "get_order",
        "Get an order by id.",
        {"order_id": _ID},
        ["order_id"],
    ),
    "issue_refund": _function(
        "issue_refund",
        "Refund an amount on an order.",
        {
            "order_id": _ID,
            "amount": {"type": "number", "exclusiveMinimum": 0},
            "reason": {"type": "string", "enum": REFUND_REASONS},
        },
        ["order_id", "amount", "reason"],
    ),
    "create_ticket": _function(
        "create_ticket",
        "Open a support ticket for a customer.",
        {
            "customer_id": _ID,
            "priority": {"type": "string", "enum": TICKET_PRIORITIES},
            "subject": {"type": "string", "minLength": 1},
            "details": {
                "type": "object",
                "properties": {
                    "category": {"type": "string", "enum": TICKET_CATEGORIES},
                    "order_id": _ID,
                },
                "required": ["category"],
                "additionalProperties": False,
            },
        },
        ["customer_id", "priority", "subject"],
    ),
    "search_products": _function(
        "search_products",
        "Search products by name, cheapest first.",
        {
            "query": {"type": "string", "minLength": 1},
            "max_price": {"type": "number", "exclusiveMinimum": 0},
        },
        ["query"],
    ),
    "add_to_cart": _function(
        "add_to_cart",
        "Add a product to the cart.",
        {"product_id": _ID, "quantity": {"type": "integer", "minimum": 1, "maximum": 100}},
        ["product_id", "quantity"],
    ),
    "get_weather": _function(
        "get_weather",
        "Current weather in a city.",
        {
            "city": {"type": "string", "minLength": 1},
            "unit": {"type": "string", "enum": TEMPERATURE_UNITS},
        },
        ["city"],
    ),
    "schedule_meeting": _function(
        "schedule_meeting",
        "Book a meeting in a free slot.",
        {
            "title": {"type": "string", "minLength": 1},
            "attendees": {
                "type": "array",
                "items": {"type": "string", "minLength": 1},
                "minItems": 1,
            },
            "slot": {
                "type": "object",
                "properties": {
                    "day": {"type": "string", "enum": WEEKDAYS},
                    "hour": {
                        "type": "integer",
                        "minimum": FIRST_MEETING_HOUR,
                        "maximum": LAST_MEETING_HOUR,
                    },
                },
                "required": ["day", "hour"],
                "additionalProperties": False,
            },
            "duration_minutes": {"type": "integer", "minimum": 15, "maximum": 240},
        },
        ["title", "attendees", "slot"],
    ),
    "convert_currency": _function(
        "convert_currency",
        "Convert money between currencies.",
        {
            "amount": {"type": "number", "minimum": 0, "maximum": 1_000_000_000},
            "source": {"type": "string", "enum": CURRENCIES},
            "target": {"type": "string", "enum": CURRENCIES},
        },
        ["amount", "source", "target"],
    ),
}
