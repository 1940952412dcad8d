"""Random shop states and the dialogue recorder behind tool-use chats.

A scenario starts from `random_shop_state`; an intent (see corpus_intents)
runs its reference calls through a `Dialogue`, which executes them on a real
`ToolEnvironment` so every tool result in the corpus is what the environment
returns.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any

from harness.tools.environment import State, ToolEnvironment, ToolResult, money
from harness.tools.schemas import TOOL_SCHEMAS
from tinyk2.world import Person, World

MATERIALS = ["oak", "steel", "bamboo", "glass", "wool", "leather", "ceramic", "copper", "linen", "cotton"]
ITEMS = [
    "desk lamp",
    "water bottle",
    "backpack",
    "notebook",
    "teapot",
    "umbrella",
    "chair",
    "mug",
    "blanket",
    "wallet",
    "candle",
    "clock",
    "kettle",
    "pillow",
]
EMAIL_DOMAINS = ["mail.com", "post.net", "inbox.org", "web.io"]
TIERS = ["basic", "silver", "gold"]
ORDER_STATUSES = ["processing", "shipped", "delivered"]
ORDER_CURRENCIES = ["USD", "EUR", "GBP"]
CONDITIONS = ["sunny", "cloudy", "rainy", "windy", "snowy", "foggy"]
BASE_RATES = {"USD": 1.0, "EUR": 0.92, "GBP": 0.79, "JPY": 151.0}  # units per 1 USD

Call = tuple[str, dict[str, Any]]  # (tool name, arguments)


def email_of(person: Person, domain: str) -> str:
    return f"{person.first}.{person.last}@{domain}".lower()


def _unique_id(rng: random.Random, prefix: str, low: int, high: int, taken: set[str]) -> str:
    while True:
        candidate = f"{prefix}-{rng.randint(low, high)}"
        if candidate not in taken:
            taken.add(candidate)
            return candidate


def random_shop_state(rng: random.Random, world: World, customers: list[Person]) -> State:
    """A small JSON state: 3-5 customers drawn from `customers`, 6-10 products, 3-6 orders, 4-6 cities."""
    taken: set[str] = set()
    state: State = {"customers": {}, "orders": {}, "products": {}, "weather": {}, "rates": {}}
    for person in rng.sample(customers, rng.randint(3, 5)):
        customer_id = _unique_id(rng, "C", 1000, 9999, taken)
        state["customers"][customer_id] = {
            "customer_id": customer_id,
            "name": person.name,
            "email": email_of(person, rng.choice(EMAIL_DOMAINS)),
            "tier": rng.choice(TIERS),
        }
    names = rng.sample([f"{m} {i}" for m in MATERIALS for i in ITEMS], rng.randint(6, 10))
    for name in names:
        product_id = _unique_id(rng, "P", 100, 999, taken)
        state["products"][product_id] = {
            "product_id": product_id,
            "name": name,
            "price": rng.randint(300, 20000) / 100,
        }
    for _ in range(rng.randint(3, 6)):
        order_id = _unique_id(rng, "O", 10000, 99999, taken)
        items = rng.sample(sorted(state["products"]), rng.randint(1, 3))
        state["orders"][order_id] = {
            "order_id": order_id,
            "customer_id": rng.choice(sorted(state["customers"])),
            "status": rng.choice(ORDER_STATUSES),
            "total": money(sum(state["products"][p]["price"] for p in items)),
            "currency": rng.choice(ORDER_CURRENCIES),
            "items": items,
        }
    for city in rng.sample(world.towns, rng.randint(4, 6)):
        state["weather"][city] = {"temp_c": rng.randint(-5, 35), "condition": rng.choice(CONDITIONS)}
    state["rates"] = {
        c: rate if c == "USD" else round(rate * rng.uniform(0.95, 1.05), 3 if c != "JPY" else 1)
        for c, rate in BASE_RATES.items()
    }
    for collection in ("refunds", "tickets", "cart", "meetings"):
        state[collection] = []
    return state


@dataclass
class Dialogue:
    """Records reference tool calls, grouped per assistant message, as they run."""

    env: ToolEnvironment
    turns: list[list[tuple[str, dict[str, Any], ToolResult]]] = field(default_factory=list)

    def call(self, *calls: Call) -> list[ToolResult]:
        """One assistant message issuing `calls` (in parallel); returns their results."""
        results = [self.env.call(name, arguments) for name, arguments in calls]
        self.turns.append(
            [(name, arguments, result) for (name, arguments), result in zip(calls, results, strict=True)]
        )
        return results

    def tool_names(self) -> list[str]:
        return sorted({name for turn in self.turns for name, _, _ in turn})

    def expected_calls(self) -> list[dict[str, Any]]:
        return [{"name": name, "arguments": arguments} for turn in self.turns for name, arguments, _ in turn]

    def messages(self, user_text: str, answer: str) -> list[dict[str, Any]]:
        """OpenAI chat messages: user, (assistant tool_calls, tool results)*, final assistant; arguments as
        compact JSON strings (the template renders a string as given, an object with spaces as K2's does)."""
        messages: list[dict[str, Any]] = [{"role": "user", "content": user_text}]
        index = 0
        for turn in self.turns:
            calls = []
            results = []
            for name, arguments, result in turn:
                call_id = f"functions.{name}:{index}"
                index += 1
                arguments_json = json.dumps(arguments, separators=(",", ":"), ensure_ascii=False)
                calls.append(
                    {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments_json}}
                )
                results.append(  # `name` heads the result, as Kimi K2's tool-call guidance sends it
                    {
                        "role": "tool",
                        "tool_call_id": call_id,
                        "name": name,
                        "content": json.dumps(result, separators=(",", ":")),
                    }
                )
            messages.append({"role": "assistant", "content": "", "tool_calls": calls})
            messages.extend(results)
        messages.append({"role": "assistant", "content": answer})
        return messages


def declared_tools(rng: random.Random, needed: list[str], allow_empty: bool) -> list[str]:
    """The needed tools plus random distractors, 3-4 in all, shuffled; sometimes [] when none is needed."""
    if not needed and allow_empty and rng.random() < 0.25:
        return []
    size = max(len(needed), rng.choice([3, 4]))
    others = [name for name in TOOL_SCHEMAS if name not in needed]
    names = needed + rng.sample(others, size - len(needed))
    rng.shuffle(names)
    return names
