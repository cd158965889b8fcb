"""Generate the labelled PII sets: texts with structured identifiers and look-alike negatives.

Three splits from different seeds AND different sentence templates and formats, so a later split
is not the development split reworded: ``pii_dev.jsonl`` (tuned on), ``pii_test.jsonl`` (held out
at first; its first run found three bugs, which were fixed, so it no longer counts as unseen) and
``pii_holdout.jsonl`` (written after those fixes, run once, never tuned on). Valid identifiers
are made with their real check digits (Luhn, IBAN mod-97, SSN rules); look-alikes break exactly
those (one digit off, a bad checksum, an impossible SSN area, order numbers, versions, dates).
Run: ``.venv/bin/python tests/data/guard/make_pii_sets.py``.
"""

from __future__ import annotations

import json
import random
import re
import string
from pathlib import Path

from stdnum import iban, luhn

HERE = Path(__file__).parent

CARD_PREFIXES = ["4", "51", "52", "55", "2221", "34", "37", "6011", "65", "35"]
# BBAN layouts (a: letters, n: digits); the test split adds countries the dev split never had.
IBAN_LAYOUTS = {
    "dev": {"DE": "n18", "FR": "n23", "GB": "a4n14", "NL": "a4n10", "IT": "a1n22", "CH": "n17"},
    "test": {
        "DE": "n18",
        "GB": "a4n14",
        "AT": "n16",
        "PL": "n24",
        "PT": "n21",
        "FI": "n14",
        "IE": "a4n14",
        "SE": "n20",
    },
    "holdout": {"DK": "n14", "LU": "n16", "FR": "n23", "NL": "a4n10", "CH": "n17", "AT": "n16"},
}
US_AREAS = ["201", "212", "213", "312", "415", "503", "617", "646", "702", "718", "737", "805", "917"]
DOMAINS = ["example.com", "mail.example.org", "corp.example.net", "uni.example.edu", "example.co.uk"]
NAMES = ["alice", "bob.smith", "c.dupont", "dmitri_k", "eva+news", "frank.o", "grace99", "h.tanaka"]


def card(rng: random.Random) -> str:
    prefix = rng.choice(CARD_PREFIXES)
    length = 15 if prefix in ("34", "37") else 16
    body = prefix + "".join(rng.choice("0123456789") for _ in range(length - len(prefix) - 1))
    return body + luhn.calc_check_digit(body)


def bad_card(rng: random.Random) -> str:
    number = card(rng)
    last = str((int(number[-1]) + rng.randint(1, 9)) % 10)
    return number[:-1] + last  # Luhn fails


def group(number: str, size: int = 4, sep: str = " ") -> str:
    return sep.join(number[i : i + size] for i in range(0, len(number), size))


def make_iban(rng: random.Random, split: str) -> str:
    country, layout = rng.choice(sorted(IBAN_LAYOUTS[split].items()))
    bban = ""
    for kind, count in re.findall(r"([an])(\d+)", layout):
        bban += "".join(rng.choice(string.ascii_uppercase if kind == "a" else string.digits) for _ in range(int(count)))
    check = iban.calc_check_digits(country + "00" + bban)
    return country + check + bban


def bad_iban(rng: random.Random, split: str) -> str:
    value = make_iban(rng, split)
    digit = str((int(value[2]) + rng.randint(1, 8)) % 10)
    return value[:2] + digit + value[3:]


def ssn(rng: random.Random, sep: str = "-") -> str:
    area = rng.randint(1, 899)
    while area == 666:
        area = rng.randint(1, 899)
    return f"{area:03d}{sep}{rng.randint(1, 99):02d}{sep}{rng.randint(1, 9999):04d}"


def bad_ssn(rng: random.Random) -> str:
    area = rng.choice(["000", "666", f"{rng.randint(900, 999)}"])
    return f"{area}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"


def us_phone(rng: random.Random, style: int) -> str:
    area, exchange, line = rng.choice(US_AREAS), rng.randint(200, 989), rng.randint(1000, 9999)
    return [f"({area}) {exchange}-{line}", f"+1 {area} {exchange} {line}", f"{area}-{exchange}-{line}"][style % 3]


def intl_phone(rng: random.Random, style: int) -> str:
    options = [
        f"+44 20 {rng.randint(7000, 8999)} {rng.randint(1000, 9999)}",
        f"+49 30 {rng.randint(1000000, 9999999)}",
        f"+33 1 {rng.randint(10, 99)} {rng.randint(10, 99)} {rng.randint(10, 99)} {rng.randint(10, 99)}",
        f"+44 7{rng.randint(400, 999)} {rng.randint(100000, 999999)}",
    ]
    return options[style % len(options)]


def email(rng: random.Random) -> str:
    return f"{rng.choice(NAMES)}@{rng.choice(DOMAINS)}"


def ip(rng: random.Random, v6: bool) -> str:
    if v6:
        return f"2001:db8:{rng.randint(0, 0xFFFF):x}::{rng.randint(1, 0xFFFF):x}"
    return f"{rng.randint(11, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"


TEMPLATES = {
    "dev": [
        "Please update my card to {v} before the next billing cycle.",
        "You can reach me at {v} any time after 5pm.",
        "Wire the refund to {v}, thanks!",
        "My social security number is {v} for the tax form.",
        "The server at {v} keeps timing out.",
        "Contact: {v}",
        "hi, its me again, my details are {v} if you need them",
    ],
    "test": [
        "Customer called from {v} asking about order status.",
        "Payment failed for {v}; please retry with another method.",
        "Forwarding the invoice to {v} as requested.",
        "SSN on file: {v}. Verify before approving the loan.",
        "Traffic from {v} was blocked by the firewall at 03:12.",
        "[ticket] user={v} priority=high",
        "Can you double-check {v}? I think it is wrong.",
    ],
    "holdout": [
        "Note from the call: {v} (confirmed twice).",
        "{v} is what the form says, but the system rejects it",
        "Per our chat yesterday, here it is -> {v}",
        '"{v}" was entered in the billing field.',
        "Logged: src={v}; action=deny",
        "Dear team, kindly update the record with {v}. Regards, J.",
    ],
}
NEGATIVES = {
    "dev": [
        "Order #{o} shipped on 2024-03-15 and should arrive by Friday.",
        "We upgraded from version {ver} to the latest release.",
        "The meeting is at 10:30 in room 4.12, bring the Q3 report.",
        "Tracking number {o}{o2} was scanned in Memphis.",
        "Invoice {o}-{o2} totals $1,234.56 including tax.",
        "The card ending in 4242 was declined.",
        "Call extension 4521 for the help desk.",
    ],
    "test": [
        "Build {ver} passed all 1,532 tests in 12.5 minutes.",
        "Reference {o}{o2}{o} is the batch id for the import job.",
        "Coordinates 48.8566, 2.3522 mark the centre of Paris.",
        "The patch bumps the schema to v{ver} and drops 3 columns.",
        "Population grew from 1,204,331 to 1,311,902 between 2010 and 2020.",
        "Sprint 14 ends on 2025-01-31 at 17:00 UTC.",
        "Use ISBN 978-0-306-40615-7 when you cite the book.",
    ],
    "holdout": [
        "Release {ver} fixes 27 bugs; see ticket {o}.",
        "The shipment weighs 1,250.75 kg and left on 03/04/2025.",
        "Room 12.04.3, floor 12, building {o2}.",
        "Part number {o}-{o2}-{o} is out of stock until week 32.",
        "Between 09:00 and 17:30 the line is staffed by 14 agents.",
        "Ratio 3.14159 vs 2.71828 in the benchmark table.",
    ],
}


def positives(rng: random.Random, split: str, n: int) -> list[dict[str, object]]:
    rows = []
    kinds = ["credit_card", "iban", "us_ssn", "phone", "email", "ip_address"]
    for i in range(n):
        kind = kinds[i % len(kinds)]
        style = i // len(kinds)
        if kind == "credit_card":
            raw = card(rng)
            if split == "dev":
                value = group(raw, 4, "-" if style % 2 else " ")
            elif split == "test":
                value = raw if style % 2 else group(raw)
            else:
                value = group(raw, 4, "-") if style % 2 else raw
        elif kind == "iban":
            raw = make_iban(rng, split)
            value = group(raw) if style % 2 == 0 else raw
        elif kind == "us_ssn":
            value = ssn(rng, "-" if split != "test" or style % 2 else " ")
        elif kind == "phone":
            if split == "dev":
                value = us_phone(rng, style)
            elif split == "test":
                value = intl_phone(rng, style)
            else:
                value = us_phone(rng, style + 1) if style % 2 else intl_phone(rng, style + 1)
        elif kind == "email":
            value = email(rng)
        else:
            value = ip(rng, v6=split != "dev" and style % 2 == 1)
        template = rng.choice(TEMPLATES[split])
        rows.append({"text": template.format(v=value), "entities": [{"kind": kind, "value": value}]})
    return rows


def negatives(rng: random.Random, split: str, n: int) -> list[dict[str, object]]:
    rows = []
    makers = [
        lambda: group(bad_card(rng)),
        lambda: group(bad_iban(rng, split)),
        lambda: bad_ssn(rng),
    ]
    for i in range(n):
        if i % 2 == 0:
            value = makers[(i // 2) % len(makers)]()
            template = rng.choice(TEMPLATES[split])
            rows.append({"text": template.format(v=value), "entities": []})
        else:
            template = rng.choice(NEGATIVES[split])
            text = template.format(
                o=rng.randint(100000, 999999),
                o2=rng.randint(1000, 9999),
                ver=f"{rng.randint(1, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 9)}",
            )
            rows.append({"text": text, "entities": []})
    return rows


def main() -> None:
    for split, seed in (("dev", 1), ("test", 2), ("holdout", 3)):
        rng = random.Random(seed)
        rows = positives(rng, split, 120) + negatives(rng, split, 80)
        with (HERE / f"pii_{split}.jsonl").open("w") as out:
            for row in rows:
                out.write(json.dumps(row) + "\n")
        print(f"pii_{split}.jsonl: {len(rows)} texts")


if __name__ == "__main__":
    main()
