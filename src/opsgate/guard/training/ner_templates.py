"""Labelled training sentences for the fast name recogniser, generated from templates (seeded).

Slots: ``{PER}`` a person, ``{LOC}`` a place, ``{ORG}`` an organisation, ``{ADDR}`` a street address
(labelled so the recogniser learns to leave it to the address patterns), ``{FIRST}`` a first name
alone, ``{LAST}`` a surname alone, plus unlabelled fillers (``{EMAIL}``, ``{PHONE}``, ``{DAY}``,
``{MONTH}``, ``{THING}``: capitalised words that are no names). Values come from Faker (MIT) in
every locale it ships, weighted towards English ones. A sentence is one to three clauses in a frame
(plain, chat, email, form, list), so names appear at the start, middle and end of sentences, after
cues and without them, next to punctuation, in lists and in lines of their own.

These templates were written for training only: they share no sentence with the dev, holdout or
blind holdout sets under ``tests/data/guard``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from faker import Faker
from faker.config import AVAILABLE_LOCALES

Span = tuple[int, int, str]

PERSON = [
    "I had lunch with {PER} yesterday.", "{PER} will join the call at three.", "Send the draft to {PER}.",
    "Dear {PER},", "Hi {FIRST},", "Hello {PER}, thanks for the quick reply.", "Thanks, {FIRST}!",
    "Best regards,\n{PER}", "Kind regards, {PER}", "Cheers,\n{FIRST}", "Name: {PER}", "Full name: {PER}",
    "Contact person: {PER}", "Mr. {LAST} called again.", "Mrs {LAST} asked for a refund.",
    "Dr. {PER} reviewed the scan.", "Ms. {PER} is out of office.", "Prof. {LAST} teaches the course.",
    "{PER} said the numbers look fine.", "According to {PER}, the deadline slipped.",
    "Please ask {FIRST} to approve it.", "{FIRST} and {FIRST} are on leave.",
    "{PER}, {PER} and {PER} signed the petition.", "My name is {PER}.", "I'm {PER} from accounting.",
    "This is {FIRST}, calling about my order.", "The account holder is {PER}.",
    "{PER}'s flight lands at noon.", "We hired {PER} as a designer.", "Can {FIRST} cover my shift?",
    "cc: {PER}", "From: {PER}", "To: {PER}", "Assigned to {PER}", "Reviewer: {PER}",
    "Patient {PER} was admitted on {DAY}.", "The tenant, {PER}, reported a leak.",
    "{PER} ({EMAIL}) asked about the invoice.", "Call {PER} on {PHONE}.", "Reach {FIRST} at {PHONE}.",
    "I think {FIRST} forgot the keys.", "Tell {FIRST} I said hi.", "{LAST} scored twice in the final.",
    "The report was written by {PER}.", "Interview with {PER}", "{PER} is the new head of sales.",
    "my friend {FIRST} lives nearby", "ask {PER} before you merge", "{FIRST} wants pizza tonight",
    "Signed, {PER}", "Witness: {PER}", "Emergency contact - {PER}", "Congratulations to {PER}!",
    "Happy birthday, {FIRST}!", "Who is {PER}?", "Is {PER} available on {DAY}?",
    "{PER} from {ORG} called about the contract.", "{PER} moved to {LOC} last year.",
]  # fmt: skip
PLACE = [
    "I live in {LOC}.", "We moved to {LOC} in {MONTH}.", "The office in {LOC} is closed.",
    "Flights from {LOC} to {LOC} are delayed.", "{LOC} is lovely in the spring.",
    "What is the weather like in {LOC}?", "She was born in {LOC}.", "Our team in {LOC} handles support.",
    "City: {LOC}", "Country: {LOC}", "Location: {LOC}", "Place of birth: {LOC}", "Hometown - {LOC}",
    "The train to {LOC} leaves at nine.", "They opened a shop near {LOC}.", "I'm visiting {LOC} next week.",
    "Greetings from {LOC}!", "Is it safe to drive from {LOC} to {LOC} at night?", "{LOC}, {LOC} and {LOC}",
    "Ship it to our warehouse in {LOC}.", "the conference is in {LOC} this year", "how far is {LOC} from here",
    "Prices in {LOC} went up again.", "He grew up outside {LOC}.", "Our {LOC} branch", "Born: {LOC}",
    "We spent two weeks travelling around {LOC}.", "The storm hit {LOC} on {DAY}.",
]  # fmt: skip
ORGANISATION = [
    "I work at {ORG}.", "{ORG} announced record profits.", "We signed a deal with {ORG}.",
    "Company: {ORG}", "Employer: {ORG}", "Organisation: {ORG}", "Bill to: {ORG}",
    "She left {ORG} in {MONTH}.", "The invoice from {ORG} is overdue.", "{ORG} is hiring engineers.",
    "Our supplier, {ORG}, raised prices.", "Shares of {ORG} fell five percent.", "He consults for {ORG}.",
    "Thank you for contacting {ORG}.", "{ORG}'s new office opened on {DAY}.", "The merger of {ORG} and {ORG}",
    "a recruiter from {ORG} reached out", "Quote from {ORG} attached.", "I got an offer from {ORG}!",
    "Is {ORG} a good place to work?", "{ORG} will sponsor the event.", "Client: {ORG}",
    "Vendor list: {ORG}; {ORG}; {ORG}", "The contract between {ORG} and {ORG} ends soon.",
]  # fmt: skip
ADDRESS = [
    "Address: {ADDR}", "Please deliver to {ADDR}.", "I moved to {ADDR} last month.", "Send the keys to {ADDR}.",
    "{PER}\n{ADDR}", "Our new office is at {ADDR}.", "Shipping address: {ADDR}", "Billing address - {ADDR}",
    "The parcel went to {ADDR} by mistake.", "{ORG}, {ADDR}",
]  # fmt: skip
NEUTRAL = [
    "The meeting is on {DAY}.", "Please review the {THING} before {DAY}.", "The {THING} is due in {MONTH}.",
    "Open the {THING} and click Save.", "Let me know if you have questions.", "See the attached {THING}.",
    "Thanks in advance!", "Any update on this?", "The Quarterly Review moved to {DAY}.",
    "Status: Approved", "Priority: High", "Next steps: Review and Sign Off", "Subject: {THING}",
    "We need the {THING} by {MONTH}.", "Happy New Year!", "I agree with the Summary.",
    "Click Settings, then Privacy.", "The Board will vote in {MONTH}.", "Use the Export button.",
    "Reply All is disabled.", "Check the Release Notes first.", "Total: 42 EUR", "Order #4481 shipped.",
]  # fmt: skip
THINGS = [
    "Budget", "Report", "Slides", "Roadmap", "Invoice", "Contract", "Agenda", "Spreadsheet", "Dashboard",
    "Release Notes", "Style Guide", "Onboarding Checklist", "Annual Report", "Project Plan", "Test Plan",
    "Design Doc", "Product Spec", "Sales Forecast", "Admin Console", "User Manual", "Final Draft",
]  # fmt: skip
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]  # fmt: skip
ORG_WORDS = ["Logistics", "Consulting", "Labs", "Systems", "Bank", "Insurance", "Foods", "Motors", "Media",
             "Partners", "Solutions", "Technologies", "Pharma", "Energy", "Capital", "Holdings", "Studio",
             "Hospital", "University", "Foundation", "Airlines", "Telecom", "Analytics", "Bakery"]  # fmt: skip

LOCALES = sorted(AVAILABLE_LOCALES)
ENGLISH = ["en_US", "en_US", "en_US", "en_GB", "en_CA", "en_AU", "en_IE", "en_NZ", "en_IN"]


@dataclass
class Generator:
    """Seeded fakers for every locale, and the value makers."""

    rng: random.Random

    def __post_init__(self) -> None:
        self.fakers: dict[str, Faker] = {}

    def faker(self) -> Faker:
        locale = self.rng.choice(ENGLISH) if self.rng.random() < 0.5 else self.rng.choice(LOCALES)
        if locale not in self.fakers:
            fake = Faker(locale)
            fake.seed_instance(self.rng.randint(0, 2**31))
            self.fakers[locale] = fake
        return self.fakers[locale]

    def value(self, slot: str, fake: Faker | None = None) -> tuple[str, str | None]:
        """A value for ``slot`` and the label of its capitalised words (None: not a name)."""
        rng = self.rng
        fake = fake or self.faker()
        makers: dict[str, Callable[[], tuple[str, str | None]]] = {
            "PER": lambda: (self._person(fake), "PER"),
            "FIRST": lambda: (str(fake.first_name()), "PER"),
            "LAST": lambda: (str(fake.last_name()), "PER"),
            "LOC": lambda: (self._place(fake), "LOC"),
            "ORG": lambda: (self._organisation(fake), "ORG"),
            "ADDR": lambda: (self._address(fake), "ADDR"),
            "EMAIL": lambda: (str(fake.email()), None),
            "PHONE": lambda: (str(fake.phone_number()), None),
            "DAY": lambda: (rng.choice(DAYS), None),
            "MONTH": lambda: (rng.choice(MONTHS), None),
            "THING": lambda: (rng.choice(THINGS), None),
        }
        try:
            return makers[slot]()
        except AttributeError:  # a locale without that provider: an English value instead
            if "en_US" not in self.fakers:
                self.fakers["en_US"] = Faker("en_US")
                self.fakers["en_US"].seed_instance(self.rng.randint(0, 2**31))
            return self.value(slot, self.fakers["en_US"])

    def _person(self, fake: Faker) -> str:
        roll = self.rng.random()
        if roll < 0.45:
            return f"{fake.first_name()} {fake.last_name()}"
        if roll < 0.75:
            return str(fake.name())
        if roll < 0.85:
            return f"{fake.first_name()} {fake.first_name()} {fake.last_name()}"
        if roll < 0.92:
            return f"{fake.first_name()[0]}. {fake.last_name()}"
        return f"{fake.last_name()}, {fake.first_name()}"

    def _place(self, fake: Faker) -> str:
        roll = self.rng.random()
        if roll < 0.55:
            return str(fake.city())
        if roll < 0.75:
            return str(fake.country())
        if roll < 0.9 and hasattr(fake, "state"):
            return str(fake.state())
        return f"{fake.city()}, {fake.country()}"

    def _organisation(self, fake: Faker) -> str:
        roll = self.rng.random()
        if roll < 0.6:
            return str(fake.company())
        if roll < 0.8:
            return f"{fake.last_name()} {self.rng.choice(ORG_WORDS)}"
        if roll < 0.9:
            return f"{fake.city()} {self.rng.choice(ORG_WORDS)}"
        return f"{self.rng.choice(['Bank', 'University', 'Museum', 'Port Authority'])} of {fake.city()}"

    def _address(self, fake: Faker) -> str:
        if self.rng.random() < 0.4:
            return str(fake.address()).replace("\n", ", ")
        return str(fake.street_address()).replace("\n", ", ")


def fill(template: str, gen: Generator) -> tuple[str, list[Span]]:
    """The template with its slots filled, and the labelled spans (start, end, label)."""
    out: list[str] = []
    spans: list[Span] = []
    length = 0
    last = 0
    for slot in re.finditer(r"\{(\w+)\}", template):
        piece = template[last : slot.start()]
        out.append(piece)
        length += len(piece)
        text, label = gen.value(slot.group(1))
        text = text.strip()
        if label is not None:
            spans.append((length, length + len(text), label))
        out.append(text)
        length += len(text)
        last = slot.end()
    out.append(template[last:])
    return "".join(out), spans


def _join(parts: list[tuple[str, list[Span]]], separator: str) -> tuple[str, list[Span]]:
    text = ""
    spans: list[Span] = []
    for index, (part, part_spans) in enumerate(parts):
        if index:
            text += separator
        spans += [(start + len(text), end + len(text), label) for start, end, label in part_spans]
        text += part
    return text, spans


def sentence(gen: Generator) -> tuple[str, list[Span]]:
    """One training example: one to three clauses, in a frame."""
    rng = gen.rng
    pools = [PERSON] * 4 + [PLACE] * 3 + [ORGANISATION] * 3 + [ADDRESS, NEUTRAL, NEUTRAL]
    clauses = [fill(rng.choice(rng.choice(pools)), gen) for _ in range(rng.choice([1, 1, 2, 2, 3]))]
    frame = rng.random()
    if frame < 0.15:
        clauses.insert(0, fill(rng.choice(["Hi {FIRST},", "Dear {PER},", "Hello,", "Hey team,", "Hi all,"]), gen))
        clauses.append(fill(rng.choice(["Thanks,\n{FIRST}", "Best,\n{PER}", "Regards", "-- {PER}"]), gen))
        return _join(clauses, rng.choice(["\n\n", "\n"]))
    if frame < 0.25:
        return _join(clauses, "\n- ")
    text, spans = _join(clauses, rng.choice([" ", " ", "  ", "\n", " and "]))
    if rng.random() < 0.08:  # chat style: no capital at the start of the sentence
        text = text[:1].lower() + text[1:]
    return text, spans


def sentences(count: int, seed: int) -> list[tuple[str, list[Span]]]:
    """``count`` examples, deterministic for a seed."""
    gen = Generator(random.Random(seed))
    return [sentence(gen) for _ in range(count)]
