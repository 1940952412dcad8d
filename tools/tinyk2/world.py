"""The fictional world the synthetic corpus talks about.

Every name is forged from syllables by a seeded `random.Random`, so the same
seed gives the same world and no name is an English word the grammar uses.
Facts are (relation, subject, object) triples; prose, fact paragraphs, QA
documents and held-out MCQ items are all generated from the same `World`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

ONSETS = [
    "b",
    "br",
    "d",
    "dr",
    "f",
    "g",
    "gl",
    "h",
    "k",
    "l",
    "m",
    "n",
    "p",
    "r",
    "s",
    "st",
    "t",
    "th",
    "v",
    "z",
    "w",
    "c",
    "sh",
    "tr",
]
VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "ou", "ie"]
CODAS = ["", "", "n", "r", "l", "s", "th", "m", "k", "nd", "rn", "sk"]
COUNTRY_ENDINGS = ["ia", "and", "or", "esh", "ara", "ent"]
TOWN_ENDINGS = ["", "mar", "ford", "wick", "holm", "dun", "ay"]

PROFESSIONS = [
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
    "mason",
    "cooper",
    "tanner",
    "healer",
    "scribe",
    "farmer",
    "boatman",
    "glassblower",
    "beekeeper",
    "candlemaker",
]
COLOURS = [
    "red",
    "blue",
    "green",
    "yellow",
    "white",
    "black",
    "grey",
    "brown",
    "orange",
    "purple",
    "silver",
    "golden",
]
INGREDIENTS = [
    "barley",
    "lentils",
    "goat cheese",
    "river fish",
    "mushrooms",
    "chestnuts",
    "honey",
    "plums",
    "onions",
    "rice",
    "beans",
    "turnips",
    "smoked eel",
    "wild garlic",
    "oats",
]


@dataclass(frozen=True)
class Person:
    first: str
    last: str
    pronoun: str  # "he" | "she"

    @property
    def name(self) -> str:
        return f"{self.first} {self.last}"


@dataclass(frozen=True)
class Fact:
    relation: str  # a key of tinyk2.corpus_facts.RELATIONS
    subject: str
    object: str


@dataclass(frozen=True)
class World:
    countries: list[str]
    towns: list[str]
    capital_of: dict[str, str]  # country -> town
    river_town: dict[str, str]  # river -> town it flows through
    people: list[Person]
    profession_of: dict[str, str]  # person name -> profession
    birthplace_of: dict[str, str]  # person name -> town
    animal_colour: dict[str, str]  # animal -> colour
    mountain_country: dict[str, str]  # mountain -> country
    dish_ingredient: dict[str, str]  # dish -> ingredient
    train_customers: list[Person]  # names for training tool-use scenarios
    heldout_customers: list[Person]  # disjoint names for held-out scenarios

    def person(self, name: str) -> Person:
        return next(p for p in self.people if p.name == name)

    def facts(self) -> list[Fact]:
        """All facts in a fixed order."""
        tables = [
            ("capital", self.capital_of),
            ("profession", self.profession_of),
            ("birthplace", self.birthplace_of),
            ("river_town", self.river_town),
            ("animal_colour", self.animal_colour),
            ("mountain_country", self.mountain_country),
            ("dish_ingredient", self.dish_ingredient),
        ]
        return [Fact(relation, s, o) for relation, table in tables for s, o in table.items()]


class NameForge:
    """Unique pronounceable names; no name is handed out twice (case-insensitive)."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._used: set[str] = set()

    def _syllable(self) -> str:
        return self._rng.choice(ONSETS) + self._rng.choice(VOWELS) + self._rng.choice(CODAS)

    def forge(
        self, syllables: tuple[int, int] = (2, 2), endings: list[str] | None = None, lower: bool = False
    ) -> str:
        while True:
            count = self._rng.randint(*syllables)
            word = "".join(self._syllable() for _ in range(count))
            if endings:
                word += self._rng.choice(endings)
            word = word.lower() if lower else word.capitalize()
            if 4 <= len(word) <= 11 and word.lower() not in self._used:
                self._used.add(word.lower())
                return word

    def many(
        self,
        n: int,
        syllables: tuple[int, int] = (2, 2),
        endings: list[str] | None = None,
        lower: bool = False,
    ) -> list[str]:
        return [self.forge(syllables, endings, lower) for _ in range(n)]

    def people(self, n: int) -> list[Person]:
        return [
            Person(self.forge((1, 2)), self.forge((2, 2)), self._rng.choice(["he", "she"])) for _ in range(n)
        ]


def build_world(seed: int) -> World:
    """The world for `seed`: ~290 entities and 300 facts."""
    rng = random.Random(f"tinyk2-world:{seed}")
    forge = NameForge(rng)
    countries = forge.many(40, syllables=(1, 2), endings=COUNTRY_ENDINGS)
    towns = forge.many(60, syllables=(1, 2), endings=TOWN_ENDINGS)
    rivers = forge.many(40, syllables=(2, 2))
    people = forge.people(70)
    animals = forge.many(30, syllables=(2, 2), lower=True)
    mountains = forge.many(25, syllables=(2, 2))
    dishes = forge.many(25, syllables=(2, 3), lower=True)
    train_customers = forge.people(400)
    heldout_customers = forge.people(150)
    return World(
        countries=countries,
        towns=towns,
        capital_of=dict(zip(countries, towns[:40], strict=True)),
        river_town={river: rng.choice(towns) for river in rivers},
        people=people,
        profession_of={p.name: rng.choice(PROFESSIONS) for p in people},
        birthplace_of={p.name: rng.choice(towns) for p in people},
        animal_colour={a: rng.choice(COLOURS) for a in animals},
        mountain_country={m: rng.choice(countries) for m in mountains},
        dish_ingredient={d: rng.choice(INGREDIENTS) for d in dishes},
        train_customers=train_customers,
        heldout_customers=heldout_customers,
    )
