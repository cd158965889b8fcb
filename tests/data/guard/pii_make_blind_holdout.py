"""A fresh blind holdout for the PII recognisers (issue 12): written before any result of the fast recogniser
was looked at, with its own templates, locales and seed, and never tuned on.

    .venv/bin/python tests/data/guard/pii_make_blind_holdout.py   # writes pii_blind_holdout.jsonl

The templates here share no sentence with ``make_pii_faker_sets.py`` nor with the fast recogniser's
training generator (``src/opsgate/guard/training/ner_templates.py``): they are chat messages, emails,
forms, lists and questions in a style neither of those uses. Values come from Faker (MIT) in locales
the other sets mostly do not draw from. One row in five is a sentence without personal data but with
capitalised words (products, weekdays, headings, languages) that a name recogniser could take.

The first committed version was generated under a random string-hash seed (Faker iterates sets, so
it could not be regenerated); it was scored once, with the first fast model. This version, with the
hash seed fixed, was regenerated and committed before any recogniser was scored on it.
"""

from __future__ import annotations

import json
import os
import random
import re
import sys
from collections.abc import Callable
from pathlib import Path

from faker import Faker

HERE = Path(__file__).parent
ROWS = 600
SEED = 424242
LOCALES = ["en_US", "en_US", "en_US", "en_GB", "en_NZ", "fr_CA", "de_CH", "da_DK", "fi_FI", "pt_PT", "it_IT", "cs_CZ"]

TEMPLATES = [
    "hey, can you draft a reply to {person}? she asked whether the invoice went out",
    "Forwarding this from {person} — please check the figures before Monday.",
    "Meeting notes: {person} and {person} agreed to move the launch; {organization} will host it.",
    "Ship to: {person}\n{street_address}\nPhone: {phone}",
    "Customer record\nName: {person}\nEmail: {email}\nCity: {location}",
    "I grew up near {location} but now I rent a flat at {street_address}.",
    "Our vendor {organization} keeps sending duplicate bills, what should I tell them?",
    "Summarise this complaint from {person} ({email}) about the delay in {location}.",
    "Translate into Spanish: 'My colleague {person} will pick you up at the station in {location}.'",
    "{person} wrote: the contract with {organization} ends in March.",
    "Can you write a LinkedIn recommendation for {person}, who led the data team at {organization}?",
    "We are opening a new warehouse in {location} next year, run by {organization}.",
    "Please update the billing address to {street_address} and charge card {credit_card}.",
    "Who should I contact at {organization} about the refund? Last time it was {person}.",
    "Attendees:\n- {person}\n- {person}\n- {person}",
    "The parcel for {person} is stuck in {location}; tracking says call {phone}.",
    "{organization} acquired {organization} last quarter, according to the press release.",
    "write a short bio for {person}, born and raised in {location}, now CTO of {organization}",
    "Is {location} a good place to open a bakery? My partner {person} thinks so.",
    "Reminder from {organization}: your appointment with {person} is confirmed.",
    "Thanks {person}! I'll send the slides to {email} tonight.",
    "My landlord, {person}, says the heating at {street_address} will be fixed soon.",
    "Compare the offers from {organization} and {organization} for our fleet insurance.",
    "The conference moved from {location} to {location} because of the strike.",
    "Draft a polite note to {person} declining the offer from {organization}.",
    "Emergency contact: {person}, {phone}",
    "{person} and I visited {location} in the summer, we stayed with friends.",
    "Please check whether {person} still works for {organization}; the email to {email} bounced.",
    "Deliver to {street_address} before noon. Ask for {person} at reception.",
    "our team lead {person} wants the report by friday",
]

NEGATIVES = [
    "Can you explain how Kubernetes schedules pods across Nodes?",
    "Write a Haiku about Autumn leaves and the first frost.",
    "The Q3 Roadmap lists three Epics: Search, Billing and Onboarding.",
    "Convert this Markdown table to HTML and keep the Header row.",
    "On Monday and Thursday the Standup starts at ten.",
    "Why does Python raise a KeyError when the Dict is empty?",
    "Explain the difference between TCP and UDP in two sentences.",
    "Summarise Chapter Four: The Rise of Industrial Cities.",
    "Give me a Recipe for Banana Bread with Walnuts.",
    "Our Terms of Service were updated in January; list the main changes.",
    "Rewrite the Introduction so it reads less like a Press Release.",
    "Which is faster for Machine Learning, NumPy or plain Lists?",
    "Draft a Welcome Email for new Users of the Mobile App.",
    "What are the Pros and Cons of Remote Work for Junior Developers?",
    "Set the Log Level to Debug and restart the Worker Service.",
]


def _phone(fake: Faker) -> str:
    return str(fake.phone_number())


def _card(fake: Faker) -> str:
    return str(fake.credit_card_number())


def _location(fake: Faker, rng: random.Random) -> str:
    if rng.random() < 0.7:
        return str(fake.city())
    return str(fake.country())


def _address(fake: Faker) -> str:
    return str(fake.street_address()).replace("\n", ", ")


def _person(fake: Faker, rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.6:
        return f"{fake.first_name()} {fake.last_name()}"
    if roll < 0.8:
        return str(fake.name())
    return str(fake.first_name())


def value(kind: str, fake: Faker, rng: random.Random) -> str:
    """One Faker value of ``kind``."""
    makers: dict[str, Callable[[], str]] = {
        "person": lambda: _person(fake, rng),
        "street_address": lambda: _address(fake),
        "location": lambda: _location(fake, rng),
        "organization": lambda: str(fake.company()),
        "phone": lambda: _phone(fake),
        "email": lambda: str(fake.email()),
        "credit_card": lambda: _card(fake),
    }
    return makers[kind]().strip()


def fill(template: str, fake: Faker, rng: random.Random) -> tuple[str, list[dict[str, object]]]:
    """The template with each slot filled, and the filled spans."""
    out: list[str] = []
    entities: list[dict[str, object]] = []
    last = 0
    for slot in re.finditer(r"\{(\w+)\}", template):
        out.append(template[last : slot.start()])
        start = sum(len(part) for part in out)
        text = value(slot.group(1), fake, rng)
        out.append(text)
        entities.append({"kind": slot.group(1), "start": start, "end": start + len(text), "value": text})
        last = slot.end()
    out.append(template[last:])
    return "".join(out), entities


def make() -> list[dict[str, object]]:
    """``ROWS`` rows."""
    rng = random.Random(SEED)
    fakers = {}
    for locale in sorted(set(LOCALES)):
        fakers[locale] = Faker(locale)
        fakers[locale].seed_instance(rng.randint(0, 2**31))
    rows: list[dict[str, object]] = []
    for _ in range(ROWS):
        if rng.random() < 0.2:
            rows.append({"text": rng.choice(NEGATIVES), "locale": "none", "entities": []})
            continue
        locale = rng.choice(LOCALES)
        text, entities = fill(rng.choice(TEMPLATES), fakers[locale], rng)
        rows.append({"text": text, "locale": locale, "entities": entities})
    return rows


def main() -> None:
    """Write the blind holdout."""
    if os.environ.get("PYTHONHASHSEED") != "0":
        # Faker picks some values by iterating sets: the same seed gives other rows under another
        # string-hash seed. Run again with a fixed one, so the file is the same on every machine.
        os.environ["PYTHONHASHSEED"] = "0"
        os.execv(sys.executable, [sys.executable, *sys.argv])
    rows = make()
    path = HERE / "pii_blind_holdout.jsonl"
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    print(f"{path.name}: {len(rows)} rows")


if __name__ == "__main__":
    main()
