"""The fast name recogniser's gazetteer: word -> bits (first name, surname, city, country, region, company
word, street word, title, common lowercase word).

Names and places come from Faker's providers (MIT) in every locale Faker ships: the lists its person,
address and company providers hold (``first_names*``, ``last_names*``, ``cities``, ``states``,
``countries``, ``company_suffixes``, …) and, for locales that build city and company names from
parts, the words of a few hundred generated values. "Common" is a word seen in lower case at least
five times in the prose the training uses as negatives (``ner_corpus.prose``): a capitalised word
that is usually an ordinary word ("Please", "Returns") is rarely a name.
"""

from __future__ import annotations

import importlib
import random
import re
from collections import Counter
from collections.abc import Iterable

from faker import Faker
from faker.config import AVAILABLE_LOCALES

from opsgate.guard.pii_fast import GAZ_BITS

BIT = {name: 1 << index for index, name in enumerate(GAZ_BITS)}
# Provider attribute name -> gazetteer bit.
_ATTRIBUTES = {
    "person": [(r"^first_names", "first"), (r"^last_names", "last"), (r"^prefixes", "title")],
    "address": [
        (r"^(cities|city_names|towns|municipalities|big_cities)$", "city"),
        (r"^countries$|^country_names$", "country"),
        (r"^(states|provinces|regions|counties|districts|departments|prefectures|cantons|lands|voivodeships"
         r"|administrative_units|states_names|province_names|region_names)$", "region"),
        (r"^street_(suffixes|prefixes|types|titles)", "street"),
    ],
    "company": [(r"^company_(suffixes|prefixes)$", "orgword")],
}  # fmt: skip
_TOKEN = re.compile(r"[^\W\d_][\w'\u2019-]*")


def _strings(value: object) -> Iterable[str]:
    if isinstance(value, dict):
        value = list(value)
    if isinstance(value, list | tuple):
        for item in value:
            if isinstance(item, str):
                yield item
            elif isinstance(item, list | tuple | dict):
                yield from _strings(item)


def _words(value: str) -> list[str]:
    return [word.lower() for word in _TOKEN.findall(value)]


def build(prose: Iterable[str], seed: int = 12) -> dict[str, int]:
    """The gazetteer: every word of the lists, with its bits."""
    gazetteer: dict[str, int] = {}

    def add(words: Iterable[str], bit: str) -> None:
        for word in words:
            if len(word) >= 2:
                gazetteer[word] = gazetteer.get(word, 0) | BIT[bit]

    rng = random.Random(seed)
    for locale in sorted(AVAILABLE_LOCALES):
        for family, rules in _ATTRIBUTES.items():
            try:
                provider = importlib.import_module(f"faker.providers.{family}.{locale}").Provider
            except ImportError:
                continue
            for attribute in dir(provider):
                for pattern, bit in rules:
                    if re.search(pattern, attribute):
                        for item in _strings(getattr(provider, attribute)):
                            add(_words(item), bit)
        fake = Faker(locale)
        fake.seed_instance(rng.randint(0, 2**31))
        person_words = {w for w, b in gazetteer.items() if b & (BIT["first"] | BIT["last"])}
        for _ in range(200):
            add(_words(fake.city()), "city")
            add((w for w in _words(fake.company()) if w not in person_words), "orgword")
    counts: Counter[str] = Counter()
    for paragraph in prose:
        counts.update(word for word in _TOKEN.findall(paragraph) if word.islower())
    add((word for word, count in counts.items() if count >= 5), "common")
    return gazetteer
