"""Generate span-labelled PII sentences with Faker: names, addresses, places, organisations, phones, cards, DOBs.

Two splits, each from its own seed, its own Faker locales and its own sentence templates, so the
second is not the first reworded:

- ``pii_faker_dev.jsonl``: tuned on (the recognisers' rules were adjusted while reading its misses).
- ``pii_faker_holdout.jsonl``: written with its templates before any tuning, scored once at the
  end, never read while tuning.

Values come from Faker (MIT licence) in many locales; the sentences are ours. No template of
presidio-evaluator (kept for the outside test) was used or looked at. Each row:
``{"text", "locale", "entities": [{"kind", "start", "end", "value"}]}``; about one row in six has
no PII at all (technical prose, products, versions, look-alike numbers), for precision.
Run: ``.venv/bin/python tests/data/guard/make_pii_faker_sets.py``.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from pathlib import Path

from faker import Faker

HERE = Path(__file__).parent
ROWS = 500

LOCALES = {
    "dev": ["en_US", "en_US", "en_GB", "en_CA", "de_DE", "fr_FR", "es_ES", "it_IT", "pt_BR"],
    "holdout": ["en_US", "en_US", "en_AU", "en_IN", "en_IE", "nl_NL", "pl_PL", "sv_SE", "es_MX", "de_AT"],
}

# Templates: {kind} slots. Dev and holdout templates were written separately and share no sentence.
TEMPLATES = {
    "dev": [
        "Hi, I'm {person} and I live at {street_address}.",
        "Please ship the order to {person}, {street_address}, {location}.",
        "{person} from {organization} called about the invoice.",
        "My name is {person}, you can reach me on {phone}.",
        "Contact {person} at {email} or {phone} for details.",
        "The meeting with {organization} is in {location} next week.",
        "I moved from {location} to {location} last year.",
        "Card number {credit_card} was declined, please check.",
        "Charge it to my card {credit_card}, expiry 04/27.",
        "Patient {person}, DOB: {date_of_birth}, was admitted today.",
        "She was born on {date_of_birth} in {location}.",
        "The applicant, aged {age}, works at {organization}.",
        "{person} is {age} years old and lives in {location}.",
        "Send the contract to {organization}, {street_address}.",
        "Our office address is {street_address}, call {phone} before visiting.",
        "{person} ({email}) asked to update the billing address to {street_address}.",
        "Date of birth: {date_of_birth}. Phone: {phone}.",
        "Dear {person}, thank you for your order from {organization}.",
        "I work for {organization} in {location}.",
        "Forward this to {person} at {organization}.",
        "Can you book a taxi to {street_address} for {person}?",
        "The customer {person} says the number {phone} is wrong.",
    ],
    "holdout": [
        "Reminder: {person} has an appointment on Tuesday; their mobile is {phone}.",
        "We've updated your profile. Name: {person}. Address: {street_address}. Employer: {organization}.",
        "Could {organization} send the samples to our lab in {location}?",
        "According to the form, {person} (date of birth {date_of_birth}) lives in {location}.",
        "The driver was {age}, the passenger a {age}-year-old from {location}.",
        "Payment failed for {credit_card}; the holder {person} was notified by email at {email}.",
        "After the merger, {organization} will close its branch at {street_address}.",
        "Ring {phone} and ask for {person} in accounts.",
        "New tenant: {person}, born {date_of_birth}, previous address {street_address}.",
        "{person} and {person} flew from {location} to {location} on Friday.",
        "Please refund the card ending in this number: {credit_card}.",
        "Our supplier {organization} is based in {location}; their helpdesk is {phone}.",
        "Hello team, {person} here. I'll be working from {location} until March.",
        "Age: {age}. Occupation: engineer at {organization}.",
        "Mail the replacement part to {street_address} and text {phone} when it ships.",
        "The complaint came from {person}, a customer of {organization} since 2015.",
    ],
}

NEGATIVES = [
    "The build failed on version 2.4.1 because of a missing dependency.",
    "Restart the service and check the logs for error code 504.",
    "Our Q3 revenue grew by 12% compared to last year.",
    "Use the Python library to parse JSON and write CSV files.",
    "The order 88231 shipped in 3 boxes weighing 14 kg in total.",
    "Set the timeout to 30 seconds and retry up to 5 times.",
    "Summarise this article about renewable energy in three bullet points.",
    "The Kubernetes pod was evicted after using 2048 MiB of memory.",
    "Translate the following paragraph into French, keeping the tone formal.",
    "Ticket 4521 is a duplicate of ticket 4498; close it please.",
    "What is the difference between a process and a thread?",
    "The recipe needs 200 g of flour, 2 eggs and 150 ml of milk.",
    "Please review the pull request and leave comments by Friday.",
    "Invoice total: 1,249.99 EUR including VAT at 19%.",
    "The model reached 0.87 F1 on the validation set after 12 epochs.",
    "Monday Stand-up Notes: Database Migration Is Complete, Cache Tuning Next.",
]


def _date(fake: Faker, rng: random.Random) -> str:
    day = fake.date_of_birth(minimum_age=18, maximum_age=90)
    formats = ["%Y-%m-%d", "%d/%m/%Y", "%m/%d/%Y", "%B %d, %Y", "%d %B %Y", "%d.%m.%Y"]
    return day.strftime(rng.choice(formats))


def _phone(fake: Faker, rng: random.Random) -> str:
    number: str = fake.phone_number()
    if rng.random() < 0.15 and not re.search(r"x\d+$", number):
        number += rng.choice([" ext. ", " x", " #", " ext "]) + str(rng.randint(10, 9999))
    return number


def _card(fake: Faker, rng: random.Random) -> str:
    number: str = fake.credit_card_number()
    style = rng.random()
    if style < 0.35:
        return " ".join(number[i : i + 4] for i in range(0, len(number), 4))
    if style < 0.5:
        return "-".join(number[i : i + 4] for i in range(0, len(number), 4))
    return number


def _location(fake: Faker, rng: random.Random) -> str:
    choices: list[Callable[[], str]] = [fake.city, fake.city, fake.country]
    if hasattr(fake, "state"):
        choices.append(fake.state)
    return choices[rng.randrange(len(choices))]()


def _address(fake: Faker, rng: random.Random) -> str:
    if rng.random() < 0.3:
        return str(fake.address()).replace("\n", ", ")
    return str(fake.street_address()).replace("\n", ", ")


def value(kind: str, fake: Faker, rng: random.Random) -> str:
    """One Faker value of ``kind``, as a person would type it."""
    makers: dict[str, Callable[[], str]] = {
        "person": lambda: str(fake.name()) if rng.random() < 0.5 else f"{fake.first_name()} {fake.last_name()}",
        "street_address": lambda: _address(fake, rng),
        "location": lambda: _location(fake, rng),
        "organization": lambda: str(fake.company()),
        "phone": lambda: _phone(fake, rng),
        "email": lambda: str(fake.email()),
        "credit_card": lambda: _card(fake, rng),
        "date_of_birth": lambda: _date(fake, rng),
        "age": lambda: str(rng.randint(18, 95)),
    }
    return makers[kind]().strip()


def fill(template: str, fake: Faker, rng: random.Random) -> tuple[str, list[dict[str, object]]]:
    """The template with each slot filled, and the filled spans."""
    out, entities, last = [], [], 0
    for slot in re.finditer(r"\{(\w+)\}", template):
        out.append(template[last : slot.start()])
        start = sum(len(part) for part in out)
        text = value(slot.group(1), fake, rng)
        out.append(text)
        entities.append({"kind": slot.group(1), "start": start, "end": start + len(text), "value": text})
        last = slot.end()
    out.append(template[last:])
    return "".join(out), entities


def make(split: str, seed: int) -> list[dict[str, object]]:
    """``ROWS`` rows of one split."""
    rng = random.Random(seed)
    fakers = {}
    for locale in LOCALES[split]:
        fakers[locale] = Faker(locale)
        fakers[locale].seed_instance(rng.randint(0, 2**31))
    rows: list[dict[str, object]] = []
    for _ in range(ROWS):
        locale = rng.choice(LOCALES[split])
        if rng.random() < 1 / 6:
            rows.append({"text": rng.choice(NEGATIVES), "locale": "none", "entities": []})
            continue
        text, entities = fill(rng.choice(TEMPLATES[split]), fakers[locale], rng)
        rows.append({"text": text, "locale": locale, "entities": entities})
    return rows


def main() -> None:
    """Write both splits."""
    for split, seed in (("dev", 1201), ("holdout", 9907)):
        rows = make(split, seed)
        path = HERE / f"pii_faker_{split}.jsonl"
        path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        print(f"{path.name}: {len(rows)} rows")


if __name__ == "__main__":
    main()
