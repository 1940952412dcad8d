"""Natural-language paragraphs from a small probabilistic grammar over the world.

A paragraph picks a topic (market, weather, work, journey, animals, festival,
river), binds the entities it talks about (consistently with the world's
facts: a person's trade, an animal's colour, a river's town), then expands an
opening sentence and 2-7 body sentences. `{symbol}` expands to a bound value
or to a uniformly chosen production of `GRAMMAR[symbol]`, recursively.
"""

from __future__ import annotations

import random
import re

from tinyk2.world import World

GRAMMAR: dict[str, list[str]] = {
    # --- shared vocabulary ---
    "good_any": [
        "wool",
        "salt",
        "barley",
        "apples",
        "cheese",
        "copper pots",
        "timber",
        "honey",
        "dried fish",
        "bread",
        "candles",
        "rope",
        "clay jars",
        "linen",
        "spices",
        "olives",
        "leather boots",
        "iron nails",
        "baskets",
        "pears",
        "walnuts",
        "blue dye",
        "woven mats",
        "plums",
        "lamp oil",
    ],
    "adj_good": [
        "fresh",
        "cheap",
        "heavy",
        "fine",
        "rough",
        "sweet",
        "dry",
        "bright",
        "old",
        "costly",
        "plain",
        "rare",
    ],
    "size_adj": [
        "small",
        "busy",
        "quiet",
        "old",
        "crowded",
        "sleepy",
        "walled",
        "prosperous",
        "windy",
        "muddy",
    ],
    "time_phrase": [
        "in the early morning",
        "before sunrise",
        "at noon",
        "late in the evening",
        "after the rain",
        "on a cold morning",
        "in the last week of {season}",
        "on the first day of {season}",
        "at dusk",
    ],
    "season_any": ["spring", "summer", "autumn", "winter"],
    "number_word": ["two", "three", "four", "five", "six", "seven", "ten", "twelve"],
    "direction": ["north", "south", "east", "west"],
    "landmark": [
        "the old bridge",
        "the town well",
        "the stone tower",
        "the mill",
        "the harbour",
        "the temple steps",
        "the north gate",
        "the square",
    ],
    "traveller": [
        "a pedlar with a lame mule",
        "two pilgrims",
        "a soldier going home",
        "a girl herding geese",
        "an old {trade_any} from {town2}",
        "a family of wandering musicians",
        "a tired messenger",
    ],
    "trade_any": [
        "baker",
        "smith",
        "weaver",
        "potter",
        "fisher",
        "miller",
        "carpenter",
        "shepherd",
        "brewer",
        "tailor",
    ],
    "feeling": ["glad", "worried", "tired", "proud", "surprised", "uneasy", "hopeful"],
    "coin_amount": [
        "a single copper coin",
        "two silver coins",
        "a handful of coppers",
        "more than it was worth",
        "half a silver piece",
        "a fair price",
    ],
    "people_group": [
        "the farmers",
        "the fishermen",
        "the children",
        "the merchants",
        "the old women",
        "the guards",
        "the travellers",
        "the shopkeepers",
    ],
    "weather_event": [
        "a storm rolled in over the hills",
        "the fog lay thick until noon",
        "a dry wind blew for days",
        "snow covered the roofs",
        "the sun burned the fields",
        "heavy rain filled the ditches",
        "hail broke the young shoots",
    ],
    "low_place": ["lower fields", "riverside houses", "market square", "meadows", "cellars", "orchards"],
    "crop": ["barley", "wheat", "apples", "grapes", "beans", "turnips", "hay"],
    # --- market ---
    "market_open": [
        "Every {weekday} the market in {town} {market_verb}.",
        "The market of {town} was the {superlative} in the {direction}.",
        "In {season}, traders from all over {country} came to the market in {town}.",
    ],
    "market_verb": [
        "filled the square from dawn",
        "drew buyers from every village",
        "was loud and crowded",
        "opened when the bell rang",
    ],
    "superlative": ["largest", "oldest", "busiest", "noisiest", "richest"],
    "market_body": [
        "{merchant} sold {adj_good} {good} near {landmark}.",
        "The price of {good} rose after {weather_event}.",
        "{person} bought {good} and paid {coin_amount}.",
        "Buyers from {town2} came early to look at the {good}.",
        "By noon the {good} was gone, and only {good_any} remained.",
        "A quarrel broke out over a basket of {good_any}, but the guards soon ended it.",
        "Some traders carried {good} all the way to {capital}, the capital of {country}.",
        "{people_group_cap} said the {good} from {town} was the best in years.",
        "When the bell rang at dusk, the stalls were packed away.",
    ],
    "merchant": [
        "A merchant from {town2}",
        "An old trader",
        "A young {trade_any}",
        "{person}",
        "A widow who kept bees",
    ],
    "people_group_cap": [
        "The farmers",
        "The merchants",
        "The old women",
        "The travellers",
        "The shopkeepers",
    ],
    # --- weather ---
    "weather_open": [
        "That {season}, the weather in {town} was {weather_adj}.",
        "In the {season} of that year {weather_event}.",
        "Nobody in {town} could remember a {season} so {weather_adj}.",
    ],
    "weather_adj": ["cold", "wet", "strange", "mild", "harsh", "stormy", "dry"],
    "weather_body": [
        "The wind came from the {direction} and {weather_event}.",
        "Rain fell on {town} for {number_word} days.",
        "The {river} rose {rise_adverb} and flooded the {low_place}.",
        "Farmers in {town} were {feeling} about the {crop}.",
        "{people_group_cap} stayed indoors and mended their tools.",
        "At night the temperature fell below freezing.",
        "By the end of the month the sky cleared again.",
        "The roads to {town2} turned to mud, and few carts got through.",
    ],
    "rise_adverb": ["quickly", "slowly", "higher than ever", "overnight", "a little"],
    # --- work ---
    "work_open": [
        "{person} was a {trade} in {town}.",
        "{person} worked as a {trade} and lived near {landmark} in {town}.",
        "Born in {home}, {person} moved to {town} to work as a {trade}.",
    ],
    "work_body": [
        "Each morning {pron} rose {time_phrase} and started work.",
        "{Pron} learned the craft from {relative}.",
        "{Poss} workshop stood close to {landmark}.",
        "People said that {pron} was the most careful {trade} in the valley.",
        "{Pron} often worked until the lamps were lit.",
        "Once {pron} travelled to {town2} to buy {good_any}.",
        "{Poss} {relative_short} helped with the heavy work.",
        "In {season} there was little work, so {pron} repaired {poss} tools.",
        "{Pron} was {feeling} when an order came from {capital}.",
        "{person} had been born in {home}, and {pron} still visited it every {season}.",
    ],
    "relative": [
        "{poss} mother",
        "{poss} father",
        "an uncle in {home}",
        "an old master in {town2}",
        "{poss} grandmother",
    ],
    "relative_short": ["brother", "sister", "son", "daughter", "cousin", "neighbour"],
    # --- journey ---
    "journey_open": [
        "{person} set out from {town} to {town2} {time_phrase}.",
        "One {season}, {person} left {town} with a cart of {good}.",
        "{person} took the {road_adj} road from {town} to {town2}.",
    ],
    "road_adj": ["dusty", "narrow", "steep", "lonely", "dangerous", "winding"],
    "journey_body": [
        "The road followed the {river} for {number_word} miles.",
        "On the way {pron} met {traveller}.",
        "{Pron} slept in a barn and left again before sunrise.",
        "At the crossing, a ferryman asked for {coin_amount}.",
        "{Pron} reached {town2} {arrival}.",
        "The inn at {town2} was full, so {pron} stayed with {relative}.",
        "From the hills {pron} could see the towers of {capital}.",
        "{Poss} mule was {feeling}, or at least it looked that way.",
    ],
    "arrival": [
        "just before dark",
        "after {number_word} days",
        "on the morning of the fair",
        "tired but safe",
    ],
    # --- animals ---
    "animal_open": [
        "The {animal} is a {animal_colour} animal that lives near {town}.",
        "In the hills above {town} you can find the {animal}.",
        "Shepherds around {town} know the {animal} well.",
    ],
    "animal_body": [
        "Its {animal_colour} coat makes it easy to see in {season}.",
        "The {animal} eats {animal_food} and drinks from the {river}.",
        "It is shy and runs away from {people_group}.",
        "In {season} the young {animal} stay close to their mothers.",
        "Some say a {animal} brings luck to a house.",
        "{person} once kept a {animal} as a pet.",
        "The {animal} sleeps during the day and hunts at night.",
        "Its call can be heard {time_phrase}.",
    ],
    "animal_food": ["grass", "berries", "roots", "small fish", "beetles", "seeds", "fallen apples"],
    # --- festival ---
    "festival_open": [
        "Each {season}, {town} held a festival for the {festival_reason}.",
        "The great festival of {town} began on a {weekday}.",
        "People came from {town2} and {capital} to see the festival in {town}.",
    ],
    "festival_reason": [
        "end of the harvest",
        "first snow",
        "return of the boats",
        "new year",
        "founding of the town",
    ],
    "festival_body": [
        "Lanterns hung from every window.",
        "{people_group_cap} danced in the square until midnight.",
        "{person} baked a cake so large that {number_word} men carried it.",
        "Musicians played old songs about the {river}.",
        "Children raced {animal_plural} along the main street.",
        "The mayor gave a long speech, and few people listened.",
        "At the end, everyone shared {good} and sweet wine.",
        "The celebration lasted {number_word} days.",
    ],
    "animal_plural": ["goats", "geese", "ponies", "dogs", "pigs"],
    # --- river ---
    "river_open": [
        "The {river} flows through {town}.",
        "{town} lies on the {river}, a {river_adj} river.",
        "Boats on the {river} carried {good} down to {town}.",
    ],
    "river_adj": ["wide", "slow", "cold", "clear", "brown", "fast"],
    "river_body": [
        "In {season} the water is {river_adj} and full of fish.",
        "Fishermen from {town} set their nets {time_phrase}.",
        "An old bridge of grey stone crosses the river near {landmark}.",
        "Barges loaded with {good_any} pass every {weekday}.",
        "When the snow melts, the {river} rises {rise_adverb}.",
        "{person} liked to walk along the bank {time_phrase}.",
        "Children swim in the shallow water in summer.",
    ],
    "closing": [
        "That is how people in {town} still tell it.",
        "Life in {town} went on as before.",
        "Such days were common in {town}.",
        "Few remember it now.",
        "{person} never forgot that {season}.",
    ],
}
TOPICS = ["market", "weather", "work", "journey", "animal", "festival", "river"]
RIVER_TOPICS = frozenset({"weather", "river"})  # topics whose town lies on the bound river
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
_SYMBOL = re.compile(r"\{(\w+)\}")
_ARTICLE = re.compile(r"\b([Aa]) (?=[aeiou])")


def expand(template: str, rng: random.Random, bindings: dict[str, str]) -> str:
    """Expand every `{symbol}` in `template`, bound symbols first."""

    def substitute(match: re.Match[str]) -> str:
        symbol = match.group(1)
        if symbol in bindings:
            return bindings[symbol]
        return expand(rng.choice(GRAMMAR[symbol]), rng, bindings)

    return _SYMBOL.sub(substitute, template)


def _bindings(world: World, rng: random.Random, topic: str) -> dict[str, str]:
    """Entities one paragraph talks about, consistent with the world's facts."""
    person = rng.choice(world.people)
    river = rng.choice(list(world.river_town))
    animal = rng.choice(list(world.animal_colour))
    country = rng.choice(world.countries)
    town = world.river_town[river] if topic in RIVER_TOPICS else rng.choice(world.towns)
    pron = person.pronoun
    return {
        "person": person.name,
        "pron": pron,
        "Pron": pron.capitalize(),
        "poss": "his" if pron == "he" else "her",
        "Poss": "His" if pron == "he" else "Her",
        "trade": world.profession_of[person.name],
        "home": world.birthplace_of[person.name],
        "town": town,
        "town2": rng.choice([t for t in world.towns if t != town]),
        "river": river,
        "country": country,
        "capital": world.capital_of[country],
        "animal": animal,
        "animal_colour": world.animal_colour[animal],
        "good": rng.choice(GRAMMAR["good_any"]),
        "season": rng.choice(GRAMMAR["season_any"]),
        "weekday": rng.choice(WEEKDAYS),
    }


def _sentence(text: str) -> str:
    text = _ARTICLE.sub(lambda m: m.group(1) + "n ", text)
    return text[0].upper() + text[1:]


def prose_paragraph(world: World, rng: random.Random) -> str:
    """One paragraph of 3-8 sentences on a random topic."""
    topic = rng.choice(TOPICS)
    bindings = _bindings(world, rng, topic)
    body = rng.sample(GRAMMAR[f"{topic}_body"], k=min(rng.randint(2, 6), len(GRAMMAR[f"{topic}_body"])))
    templates = [rng.choice(GRAMMAR[f"{topic}_open"]), *body]
    if rng.random() < 0.3:
        templates.append(rng.choice(GRAMMAR["closing"]))
    return " ".join(_sentence(expand(t, rng, bindings)) for t in templates)


def prose_paragraphs(world: World, rng: random.Random, n: int, exclude: tuple[str, ...] = ()) -> list[str]:
    """`n` paragraphs, none of them containing a paragraph of `exclude`."""
    paragraphs: list[str] = []
    while len(paragraphs) < n:
        paragraph = prose_paragraph(world, rng)
        if not any(excluded in paragraph for excluded in exclude):
            paragraphs.append(paragraph)
    return paragraphs
