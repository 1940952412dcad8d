"""Tool-using intents of scenarios: request templates and reference trajectories.

Each intent reads the scenario's state, phrases a request, runs its reference
calls through the `Dialogue` (later calls use earlier results) and returns the
final answer. Intents needing no tool live in corpus_smalltalk.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from harness.tools.environment import State
from harness.tools.schemas import CURRENCIES, WEEKDAYS
from tinyk2.corpus_arith import Triple
from tinyk2.corpus_shop import EMAIL_DOMAINS, ITEMS, Dialogue, email_of
from tinyk2.world import Fact, Person, World


@dataclass(frozen=True)
class Context:
    rng: random.Random
    world: World
    state: State
    people: list[Person]  # the name pool of this split (train or held out)
    facts: list[Fact]  # facts a user may ask about (QA-trained ones)
    excluded_triples: frozenset[Triple]  # held-out arithmetic


@dataclass(frozen=True)
class Outcome:
    user_text: str
    answer: str
    expected_answer: str | None  # a string the final answer must contain


Intent = Callable[[Context, Dialogue], Outcome]

REASON_PHRASES = {
    "damaged": ["arrived damaged", "came broken"],
    "late": ["arrived late", "came two weeks late"],
    "wrong_item": ["contained the wrong item", "was not what I ordered"],
}
TICKET_SUBJECTS = {
    "billing": ["Double charge", "Wrong invoice", "Payment failed"],
    "shipping": ["Late delivery", "Parcel lost", "Wrong address"],
    "product": ["Broken zipper", "Missing parts", "Faulty lamp"],
}
MEETING_TITLES = [
    "Budget review",
    "Team sync",
    "Design review",
    "Hiring chat",
    "Quarterly plan",
    "Launch prep",
]
DAY_NAMES = dict(zip(WEEKDAYS, ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"], strict=True))


def pick(ctx: Context, templates: list[str], **values: Any) -> str:
    return ctx.rng.choice(templates).format(**values)


def _any(ctx: Context, table: str) -> dict[str, Any]:
    return ctx.state[table][ctx.rng.choice(sorted(ctx.state[table]))]


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def lookup_customer(ctx: Context, d: Dialogue) -> Outcome:
    email = _any(ctx, "customers")["email"]
    text = pick(
        ctx,
        [
            "Can you look up the customer with the email {e}?",
            "Who is the customer behind {e}?",
            "Please find the account for {e} and tell me their tier.",
            "I need the customer id for {e}.",
        ],
        e=email,
    )
    [found] = d.call(("lookup_customer", {"email": email}))
    answer = f"{found['name']} is customer {found['customer_id']} with {found['tier']} tier."
    return Outcome(text, answer, found["customer_id"])


def lookup_unknown(ctx: Context, d: Dialogue) -> Outcome:
    known = {c["name"] for c in ctx.state["customers"].values()}
    person = ctx.rng.choice([p for p in ctx.people if p.name not in known])
    email = email_of(person, ctx.rng.choice(EMAIL_DOMAINS))
    text = pick(
        ctx,
        [
            "Can you look up the customer with the email {e}?",
            "Is there an account for {e}?",
            "I need the customer id for {e}.",
        ],
        e=email,
    )
    d.call(("lookup_customer", {"email": email}))
    return Outcome(
        text, f"I couldn't find a customer with the email {email}. Could you check the address?", None
    )


def order_status(ctx: Context, d: Dialogue) -> Outcome:
    order_id = _any(ctx, "orders")["order_id"]
    text = pick(
        ctx,
        [
            "What's the status of order {o}?",
            "Has order {o} shipped yet?",
            "Can you check on my order {o}?",
            "Where is order {o}?",
        ],
        o=order_id,
    )
    [order] = d.call(("get_order", {"order_id": order_id}))
    answer = f"Order {order_id} is {order['status']}. The total is {order['total']:.2f} {order['currency']}."
    return Outcome(text, answer, order["status"])


def refund_full(ctx: Context, d: Dialogue) -> Outcome:
    order_id = _any(ctx, "orders")["order_id"]
    reason = ctx.rng.choice(sorted(REASON_PHRASES))
    text = pick(
        ctx,
        [
            "My order {o} {r}. Please refund it in full.",
            "Order {o} {r}, I want all my money back.",
            "Could you fully refund order {o}? It {r}.",
        ],
        o=order_id,
        r=ctx.rng.choice(REASON_PHRASES[reason]),
    )
    [order] = d.call(("get_order", {"order_id": order_id}))
    [refund] = d.call(("issue_refund", {"order_id": order_id, "amount": order["total"], "reason": reason}))
    refunded = f"{refund['amount']:.2f} {order['currency']}"
    answer = f"Done: I refunded {refunded} on order {order_id} ({refund['refund_id']})."
    return Outcome(text, answer, f"{refund['amount']:.2f}")


def refund_partial(ctx: Context, d: Dialogue) -> Outcome:
    order = _any(ctx, "orders")
    amount = ctx.rng.randint(1, max(1, int(order["total"]) - 1))
    reason = ctx.rng.choice(sorted(REASON_PHRASES))
    text = pick(
        ctx,
        [
            "Please refund {a} {c} on order {o} because it {r}.",
            "Order {o} {r}. Refund {a} {c} of it, please.",
        ],
        a=amount,
        c=order["currency"],
        o=order["order_id"],
        r=ctx.rng.choice(REASON_PHRASES[reason]),
    )
    [refund] = d.call(("issue_refund", {"order_id": order["order_id"], "amount": amount, "reason": reason}))
    refunded = f"{refund['amount']:.2f} {order['currency']}"
    answer = f"I refunded {refunded} on order {order['order_id']} ({refund['refund_id']})."
    return Outcome(text, answer, f"{refund['amount']:.2f}")


def open_ticket(ctx: Context, d: Dialogue) -> Outcome:
    customer = _any(ctx, "customers")
    category = ctx.rng.choice(sorted(TICKET_SUBJECTS))
    subject = ctx.rng.choice(TICKET_SUBJECTS[category])
    priority = ctx.rng.choice(["low", "normal", "high"])
    orders = sorted(
        o["order_id"] for o in ctx.state["orders"].values() if o["customer_id"] == customer["customer_id"]
    )
    order_id = ctx.rng.choice(orders) if orders and ctx.rng.random() < 0.5 else None
    text = pick(
        ctx,
        [
            'Hi, I\'m {n} ({e}). Please open a {p} priority {c} ticket with the subject "{s}"{x}.',
            'This is {e}. I need a {p} priority {c} ticket titled "{s}"{x}.',
        ],
        n=customer["name"],
        e=customer["email"],
        p=priority,
        c=category,
        s=subject,
        x=f" about order {order_id}" if order_id else "",
    )
    [found] = d.call(("lookup_customer", {"email": customer["email"]}))
    details = {"category": category} | ({"order_id": order_id} if order_id else {})
    [ticket] = d.call(
        (
            "create_ticket",
            {
                "customer_id": found["customer_id"],
                "priority": priority,
                "subject": subject,
                "details": details,
            },
        )
    )
    return Outcome(
        text,
        f"I opened ticket {ticket['ticket_id']} for {found['name']} with {priority} priority.",
        ticket["ticket_id"],
    )


def search_products(ctx: Context, d: Dialogue) -> Outcome:
    item = ctx.rng.choice(ITEMS)
    max_price = ctx.rng.choice([None, 20, 50, 100, 150])
    text = pick(
        ctx,
        ["Search for {i}s{m}.", "Do you sell {i}s{m}?", "Show me {i}s{m}."],
        i=item,
        m=f" under {max_price} dollars" if max_price else "",
    )
    arguments: dict[str, Any] = {"query": item} | ({"max_price": max_price} if max_price else {})
    [found] = d.call(("search_products", arguments))
    hits = found["results"]
    if not hits:
        return Outcome(text, f"I found no {item}s{' under ' + str(max_price) if max_price else ''}.", None)
    listing = "; ".join(f"{p['name']} ({p['product_id']}) for {p['price']:.2f}" for p in hits[:3])
    return Outcome(text, f"I found: {listing}.", hits[0]["name"])


def search_then_add(ctx: Context, d: Dialogue) -> Outcome:
    name = _any(ctx, "products")["name"]
    item = next(i for i in ITEMS if name.endswith(i))
    quantity = ctx.rng.randint(1, 4)
    text = pick(
        ctx,
        [
            "Add {q} of the cheapest {i} to my cart.",
            "I'd like {q} of your cheapest {i}s in my cart, please.",
            "Put the cheapest {i} in my cart, quantity {q}.",
        ],
        q=quantity,
        i=item,
    )
    [found] = d.call(("search_products", {"query": item}))
    product = found["results"][0]
    [cart] = d.call(("add_to_cart", {"product_id": product["product_id"], "quantity": quantity}))
    answer = (
        f"I added {quantity} x {product['name']} ({product['product_id']}) to your cart. "
        f"The cart total is {cart['cart_total']:.2f}."
    )
    return Outcome(text, answer, product["product_id"])


def add_to_cart(ctx: Context, d: Dialogue) -> Outcome:
    product_id = _any(ctx, "products")["product_id"]
    quantity = ctx.rng.randint(1, 5)
    text = pick(
        ctx,
        ["Add {q} of {p} to my cart.", "Please put {p} in my cart, quantity {q}."],
        q=quantity,
        p=product_id,
    )
    [cart] = d.call(("add_to_cart", {"product_id": product_id, "quantity": quantity}))
    return Outcome(
        text,
        f"Added {quantity} x {product_id}. The cart total is {cart['cart_total']:.2f}.",
        f"{cart['cart_total']:.2f}",
    )


def weather(ctx: Context, d: Dialogue) -> Outcome:
    city = ctx.rng.choice(sorted(ctx.state["weather"]))
    unit = ctx.rng.choice([None, None, "celsius", "fahrenheit"])
    text = pick(
        ctx,
        [
            "What's the weather in {c}{u}?",
            "How warm is it in {c} right now{u}?",
            "Tell me the weather in {c}{u}.",
        ],
        c=city,
        u=f" in {unit}" if unit else "",
    )
    [report] = d.call(("get_weather", {"city": city} | ({"unit": unit} if unit else {})))
    answer = f"It is {report['condition']} in {city} at {report['temperature']} degrees {report['unit']}."
    return Outcome(text, answer, str(report["temperature"]))


def weather_compare(ctx: Context, d: Dialogue) -> Outcome:
    first, second = ctx.rng.sample(sorted(ctx.state["weather"]), 2)
    text = pick(
        ctx, ["Is it warmer in {a} or in {b}?", "Which is warmer today, {a} or {b}?"], a=first, b=second
    )
    reports = d.call(("get_weather", {"city": first}), ("get_weather", {"city": second}))
    (t1, t2) = (r["temperature"] for r in reports)
    if t1 == t2:
        return Outcome(text, f"Both are at {t1} degrees celsius.", None)
    warm, cold = (reports[0], reports[1]) if t1 > t2 else (reports[1], reports[0])
    answer = (
        f"{warm['city']} is warmer: {warm['temperature']} degrees "
        f"against {cold['temperature']} in {cold['city']}."
    )
    return Outcome(text, answer, warm["city"])


def schedule_meeting(ctx: Context, d: Dialogue) -> Outcome:
    title = ctx.rng.choice(MEETING_TITLES)
    attendees = [p.first for p in ctx.rng.sample(ctx.people, ctx.rng.randint(1, 3))]
    day, hour = ctx.rng.choice(WEEKDAYS), ctx.rng.randint(8, 17)
    duration = ctx.rng.choice([None, 15, 45, 60, 90])
    text = pick(
        ctx,
        [
            'Schedule "{t}" with {a} on {d} at {h}:00{m}.',
            'Please book a meeting called "{t}" on {d} at {h}:00 with {a}{m}.',
        ],
        t=title,
        a=_and(attendees),
        d=DAY_NAMES[day],
        h=hour,
        m=f" for {duration} minutes" if duration else "",
    )
    arguments: dict[str, Any] = {"title": title, "attendees": attendees, "slot": {"day": day, "hour": hour}}
    [meeting] = d.call(("schedule_meeting", arguments | ({"duration_minutes": duration} if duration else {})))
    return Outcome(
        text,
        f'Booked "{title}" on {DAY_NAMES[day]} at {hour}:00 ({meeting["meeting_id"]}).',
        meeting["meeting_id"],
    )


def convert(ctx: Context, d: Dialogue) -> Outcome:
    source, target = ctx.rng.sample(CURRENCIES, 2)
    amount = ctx.rng.choice([ctx.rng.randint(1, 500), ctx.rng.randint(100, 99999) / 100])
    text = pick(
        ctx,
        ["How much is {a} {s} in {t}?", "Convert {a} {s} to {t}, please.", "What are {a} {s} worth in {t}?"],
        a=amount,
        s=source,
        t=target,
    )
    [result] = d.call(("convert_currency", {"amount": amount, "source": source, "target": target}))
    return Outcome(
        text, f"{amount} {source} is {result['converted']:.2f} {target}.", f"{result['converted']:.2f}"
    )


def order_in_currency(ctx: Context, d: Dialogue) -> Outcome:
    order = _any(ctx, "orders")
    target = ctx.rng.choice([c for c in CURRENCIES if c != order["currency"]])
    text = pick(
        ctx,
        ["What does order {o} cost in {t}?", "How much is order {o} in {t}?"],
        o=order["order_id"],
        t=target,
    )
    [found] = d.call(("get_order", {"order_id": order["order_id"]}))
    [result] = d.call(
        ("convert_currency", {"amount": found["total"], "source": found["currency"], "target": target})
    )
    answer = (
        f"Order {order['order_id']} costs {found['total']:.2f} {found['currency']}, "
        f"which is {result['converted']:.2f} {target}."
    )
    return Outcome(text, answer, f"{result['converted']:.2f}")


TOOL_INTENTS: dict[str, Intent] = {
    "lookup_customer": lookup_customer,
    "lookup_unknown": lookup_unknown,
    "order_status": order_status,
    "refund_full": refund_full,
    "refund_partial": refund_partial,
    "open_ticket": open_ticket,
    "search_products": search_products,
    "search_then_add": search_then_add,
    "add_to_cart": add_to_cart,
    "weather": weather,
    "weather_compare": weather_compare,
    "schedule_meeting": schedule_meeting,
    "convert": convert,
    "order_in_currency": order_in_currency,
}
