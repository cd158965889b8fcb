"""Documents a model is asked to read — CVs, articles, product pages, emails, reviews, notes, READMEs —
built from interchangeable parts, with an injected instruction at a random place or none at all.

The same generator makes the clean ones, so the detector learns the instruction, not the document.
"""

from __future__ import annotations

import random

_NAMES = ["Maria Lopez", "Tom Becker", "Aiko Tanaka", "Samuel Okafor", "Priya Nair", "Lukas Novak", "Emma Dubois"]
_CITIES = ["Porto", "Leeds", "Osaka", "Nairobi", "Pune", "Brno", "Lyon", "Denver", "Tallinn"]
_CV_LINES = [
    "Senior backend engineer with {n} years of experience in Python, Go and PostgreSQL.",
    "Led a team of {n} engineers migrating a monolith to services on Kubernetes.",
    "Reduced cloud costs by {n}% by right-sizing instances and adding caching.",
    "Education: MSc Computer Science, University of {city}, graduated with distinction.",
    "Skills: distributed systems, observability, incident response, mentoring.",
    "Languages: English (fluent), Spanish (intermediate), German (basic).",
    "Volunteer: taught programming to teenagers at the {city} public library.",
    "Built a real-time fraud detection pipeline processing {n} million events per day.",
    "Certifications: AWS Solutions Architect, Certified Kubernetes Administrator.",
    "Hobbies: trail running, chess, and restoring old bicycles.",
]
_ARTICLE_LINES = [
    "The city council of {city} approved a new budget for public transport on Tuesday.",
    "Researchers found that the new battery chemistry retains {n}% of its capacity after a thousand cycles.",
    "Local farmers say the dry spring has cut yields, and prices at the market have risen.",
    "The museum will reopen next month after a renovation that took {n} months.",
    "Critics praised the film's photography but found the second half too slow.",
    "Analysts expect interest rates to stay unchanged until the end of the year.",
    "The festival drew more than {n} thousand visitors, a record for the region.",
    "Engineers are still investigating what caused the outage on the northern line.",
    "Volunteers planted trees along the river to reduce flooding in the old town.",
    "The company said the recall affects about {n} thousand units sold since March.",
]
_PRODUCT_LINES = [
    "Product: UltraLight trail backpack, 28 litres, water-resistant ripstop nylon.",
    "Weight: {n}00 g. Colours: slate, forest green, sunset orange.",
    "Features: padded laptop sleeve, hip-belt pockets, hydration bladder compatible.",
    "Customer rating: 4.{n} out of 5 from 1,2{n}3 reviews.",
    "Shipping: free delivery over 50 euros; returns accepted within 30 days.",
    "Care: hand wash with mild soap and let it dry in the shade.",
    "Warranty: 2 years against manufacturing defects.",
    "In the box: backpack, rain cover, user guide.",
    "Price: {n}9.99 EUR (was {n}4.99 EUR).",
]
_EMAIL_LINES = [
    "Hi team, quick update on the quarterly report before Friday's meeting.",
    "The numbers from the {city} office came in late, so the draft is still missing one table.",
    "Could everyone please review section {n} and leave comments by Thursday?",
    "Also, the offsite is confirmed for the 14th; details about travel will follow.",
    "Thanks for all the hard work this quarter, it really shows in the results.",
    "Let me know if anything is unclear or if you need more time.",
    "Best regards,\n{name}",
    "PS: the coffee machine on the third floor is fixed again.",
]
_REVIEW_LINES = [
    "I bought this for my daughter and she loves it.",
    "Battery life is about {n} hours, which is less than advertised.",
    "The build quality feels solid and the buttons have a nice click.",
    "Setup took five minutes with the app, no problems at all.",
    "Customer support answered my question within a day.",
    "Would recommend, though the price is a bit high for what you get.",
    "After {n} weeks of daily use, no signs of wear.",
]
_NOTES_LINES = [
    "Meeting notes, {city} project sync.",
    "Attendees: {name}, two engineers from the platform team, one designer.",
    "Decision: ship the beta to {n} pilot customers next sprint.",
    "Action item: {name} to update the onboarding docs.",
    "Risk: the vendor's API rate limits may slow the data import.",
    "Open question: do we need a separate staging database?",
    "Next meeting: Monday 10:00.",
]
_README_LINES = [
    "# quickparse\n\nA small library for parsing config files.",
    "## Installation\n\npip install quickparse",
    "## Usage\n\nCall `quickparse.load(path)` and read the returned dictionary.",
    "Options can be overridden with environment variables prefixed by QP_.",
    "Unknown keys are ignored unless `strict=True` is passed.",
    "## Contributing\n\nPull requests are welcome; please run the tests first.",
    "## License\n\nMIT",
]
DOCUMENTS = {
    "cv": _CV_LINES,
    "article": _ARTICLE_LINES,
    "product_page": _PRODUCT_LINES,
    "email": _EMAIL_LINES,
    "review": _REVIEW_LINES,
    "meeting_notes": _NOTES_LINES,
    "readme": _README_LINES,
}


def document(kind: str, rng: random.Random, payload: str | None) -> str:
    """A document of ``kind`` of 4-9 parts, with ``payload`` (if any) inserted at a random position."""
    lines = DOCUMENTS[kind]
    parts = [
        line.format(n=rng.randint(2, 9), city=rng.choice(_CITIES), name=rng.choice(_NAMES))
        for line in rng.sample(lines, min(len(lines), rng.randint(4, 9)))
    ]
    if kind == "cv":
        parts.insert(0, f"{rng.choice(_NAMES)} — {rng.choice(_CITIES)}")
    if payload is not None:
        parts.insert(rng.randint(1, len(parts)), payload)
    return ("\n" if kind in ("cv", "product_page", "meeting_notes", "readme") else " ").join(parts)
