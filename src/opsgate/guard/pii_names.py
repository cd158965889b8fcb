"""Organisations by their legal form, and the words around a name that say what kind of name it is.

The NER model reads "Lee, Kirby and Brown" as three people and "Dear Emma Giradello" as a company;
two kinds of evidence it weighs too little are used here:

- a legal form after capitalised words ("Acme Widgets Ltd", "Niemeier Müller KGaA", "Cerdán y Abril
  S.A.", "Moreno and Sons") makes an organisation, found by pattern, ranked above the model;
- the words just before a name correct the model's kind: "Dear", "Mrs", "patient", "my name is"
  → a person; "lives in", "moved to", "based in" → a place; "works at", "employed by" → an
  organisation.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator

from opsgate.domain.guard_config import PiiEntity
from opsgate.guard.linear_re import compile_linear
from opsgate.guard.pii_base import (
    WHITESPACE,
    AnchorGroup,
    Finding,
    Literals,
    anchor_windows,
    by_first_character,
    finditer_in,
    looks_like_code,
    merge_windows,
    trim,
)

# Legal forms of companies (the common ones of ISO 20275's list, by country), longest first.
_LEGAL_FORMS = [
    "GmbH & Co. KGaA", "GmbH & Co. KG", "GmbH & Co. OHG", "AG & Co. KGaA", "AG & Co. KG", "AG & Co. OHG",
    "S. R.L. de C.V.", "S.A. de C.V.", "Sp. z o.o.", "OHG mbH", "Incorporated", "Corporation", "Limited",
    "Company", "GmbH", "KGaA", "Inc.", "Inc", "Corp.", "Corp", "Co.", "Ltd.", "Ltd", "LLC", "LLP", "L.L.C.",
    "PLC", "plc", "AG", "KG", "OHG", "GbR", "e.V.", "e.G.", "S.A.R.L.", "SARL", "S.A.S.", "SAS", "S.A.U.",
    "S.A.T.", "S.A.", "SA", "S.L.N.E", "S.L.L.", "S.L.U.", "S.L.", "SL", "S.Com.", "S.Coop.", "S.C.",
    "Ltda.", "Ltda", "S/A", "- ME", "- EI", "SpA", "SPA", "S.p.A.", "s.r.l.", "S.r.l.", "Srl", "BV", "B.V.",
    "NV", "N.V.", "AB", "Oy", "ASA", "A/S", "ApS", "Sp.j.", "Sp.k.", "Pty Ltd", "Pty", "Group", "Holdings",
    "and Sons", "& Sons", "& Co.", "e figli", "e Filhos", "e Hijos", "et Fils", "y Asociados", "& Partners",
    "Partners", "Associates",
]  # fmt: skip
_FORMS = sorted(_LEGAL_FORMS, key=len, reverse=True)
_CAPITAL = r"[A-Z\u00C0-\u00DE]"
_WORD = _CAPITAL + r"[\w'\u2019.&-]{0,30}"
_CONNECT = r"(?:,\s|\s(?:and|&|e|y|und|et|i|og|en)\s|\s|-)"
# The first capital is read before the test of the character before it (``(?<![\w-])`` then ``_WORD``, the same
# matches): a pattern that opens with a character class lets ``re`` skip to the capitals (~2x less per KB).
_ORG = re.compile(
    rf"{_CAPITAL}(?<![\w-]{_CAPITAL}){_WORD[len(_CAPITAL) :]}"
    rf"(?:{_CONNECT}(?:{_WORD}|van|von|de|der|del|da|di|du)){{0,5}}"
    rf",?\s(?:{by_first_character([(re.escape(form[0]), re.escape(form[1:])) for form in _FORMS])})(?![\w&])"
)
# "Gomez, Scott and Garcia" after "at" / "for" / "from": a firm named after its partners.
_PARTNERS = re.compile(
    rf"\b(?:at|for|from|with|by)\s(?P<org>{_WORD}(?:,\s{_WORD}){{1,3}},?\s(?:and|&|e|y|und|et)\s{_WORD}"
    rf"(?:\s(?:e\sfigli|Group|LLP|LLC))?)"
)
_PERSON_CUE = re.compile(
    r"(?:\b(?:dear|hi|hello|hey|mr|mrs|ms|miss|dr|prof|sir|madam|patient|customer|client|tenant|applicant|"
    r"holder|driver|passenger|employee|colleague|contact|ask\sfor|name\sis|name:|i'm|i\sam|this\sis|"
    r"signed|regards|sincerely|thanks|cc:?|attn:?)\.?,?\s{1,3})$",
    re.I,
)
_PLACE_CUE = re.compile(
    r"(?:\b(?:lives?\sin|living\sin|live\sin|based\sin|located\sin|moved\sto|moved\sfrom|born\sin|"
    r"grew\sup\sin|visit(?:ing|ed)?|travel(?:l?ing|l?ed)?\sto|flew\sto|flew\sfrom|office\sin|lab\sin|"
    r"branch\sin|city\sof|in)\s{1,3})$",
    re.I,
)
# The one place cue of no bounded length, apart: the others are searched in the last 24 characters only.
_FROM_TO_CUE = re.compile(r"(?:\bfrom\s\S+\sto\s{1,3})$", re.I)
_ORG_CUE = re.compile(
    r"(?:\b(?:works?\sat|working\sat|works?\sfor|working\sfor|employed\sby|employer:?|"
    r"order\sfrom|customer\sof|supplier|company|firm|at)\s{1,3})$",
    re.I,
)


def reverse_pattern(pattern: str) -> str:
    """A pattern that matches the reversed strings of ``pattern``'s matches: for patterns of literal characters,
    escapes (``\\s``, ``\\.``, ``\\b``: a word boundary sits between the same two characters either way),
    classes, ``(?:…)`` groups with ``|``, and greedy quantifiers. Anything else is refused (ValueError)."""
    quantifier = re.compile(r"[?*+]|\{\d*(?:,\d*)?\}")

    def alternation(at: int) -> tuple[str, int]:
        branches: list[str] = []
        atoms: list[str] = []
        while at < len(pattern) and pattern[at] != ")":
            char = pattern[at]
            if char == "|":
                branches.append("".join(reversed(atoms)))
                atoms, at = [], at + 1
                continue
            if char == "\\":
                atom, at = pattern[at : at + 2], at + 2
            elif char == "[":
                close = pattern.index("]", at + 2)
                atom, at = pattern[at : close + 1], close + 1
            elif pattern.startswith("(?:", at):
                inner, at = alternation(at + 3)
                if at >= len(pattern):
                    raise ValueError(pattern)
                atom, at = f"(?:{inner})", at + 1
            elif char in "()^$.?*+{}":
                raise ValueError(f"{pattern!r}: {char!r} at {at}")
            else:
                atom, at = char, at + 1
            found = quantifier.match(pattern, at)
            if found is not None:
                atom, at = atom + found.group(), found.end()
                if pattern[at : at + 1] in ("?", "+"):
                    raise ValueError(f"{pattern!r}: lazy or possessive quantifier at {at}")
            atoms.append(atom)
        branches.append("".join(reversed(atoms)))
        return "|".join(branches), at

    reversed_pattern, end = alternation(0)
    if end != len(pattern):
        raise ValueError(pattern)
    return reversed_pattern


def _at_end(pattern: re.Pattern[str], longest: int | None) -> re.Pattern[str]:
    """For ``pattern`` (``…$``: a match at the end of a string, or before its final newline), the pattern whose
    ``match`` of the reversed string says whether ``pattern.search`` finds one: one attempt at one place instead
    of one at each of the last characters (a search over the 24 costs ~4 us, a reversed ``match`` a tenth).
    ``longest``: its matches are at most this long (checked; None: unbounded), where a caller relies on it."""
    body = pattern.pattern
    if not body.endswith(")$") or not body.startswith("(?:"):
        raise ValueError(body)
    if longest is not None and _width(body[:-1]) > longest:
        raise ValueError(f"{body!r}: matches longer than {longest}")
    return re.compile(r"\n?" + reverse_pattern(body[:-1]), pattern.flags)


def _width(pattern: str) -> int:
    """The length of ``pattern``'s longest match, as ``re`` computes it."""
    return int(re._parser.parse(pattern).getwidth()[1])  # type: ignore[attr-defined]


# The cues above, for ``correct_kind``: whether ``before`` ends with one is ``_X_END.match(before[::-1])``.
# The person, firm and place cues (not "from … to") are at most 23 characters long, so that answer is the
# search of ``before``'s last 24 characters it replaces.
_PERSON_CUE_END = _at_end(_PERSON_CUE, 23)
_PLACE_CUE_END = _at_end(_PLACE_CUE, 23)
_ORG_CUE_END = _at_end(_ORG_CUE, 23)
_FROM_TO_CUE_END = _at_end(_FROM_TO_CUE, None)

# Words that open a sentence or a greeting, swept into a name by the model ("Dear Henry Chambers").
_LEADING = re.compile(
    r"^(?:Dear|Hi|Hello|Hey|Contact|Patient|Customer|Forward|Please|Thanks|Attn|Ask|Ring|Call|Email|Text)\s+"
)


_PREVIOUS = re.compile(rf"(?<![\w.])({_WORD})\s$")
_PARTICLE = r"(?:de|da|do|dos|das|del|della|di|du|van|von|der|den|le|la|y|e|am|an|sur|d'|l')"
_NAMES = rf"{_WORD}(?:[\s-](?:{_PARTICLE}\s)?{_WORD}){{0,3}}"
# Strong cues, with the name after them, for names the model missed or mislabelled.
_CUED = re.compile(
    rf"\b(?:(?:Dear|Mr\.?|Mrs\.?|Ms\.?|Miss|Dr\.?|Prof\.?|[Pp]atient|[Cc]ustomer|[Cc]lient|[Tt]enant|[Aa]pplicant"
    rf"|[Cc]ontact|[Aa]sk\sfor|[Nn]ame\sis|[Nn]ame:|I'm|I\sam|[Ss]igned|[Rr]egards,|[Ss]incerely,)\s{{1,3}}"
    rf"(?P<person>{_WORD}\s(?:{_PARTICLE}\s)?{_WORD}(?:\s{_WORD}){{0,2}})"
    rf"|(?:lives?\sin|living\sin|based\sin|located\sin|born\sin|grew\sup\sin|(?:moved|flew|travell?ed|relocated)"
    rf"\s(?:from|to)|office\sin|lab\sin|branch\sin)\s{{1,3}}(?P<place>{_NAMES})"
    rf"|(?:works?\s(?:at|for)|working\s(?:at|for)|employed\sby|[Ee]mployer:|order\sfrom|customer\sof"
    rf"|on\sbehalf\sof)\s{{1,3}}(?P<org>{_NAMES}))"
)
# "from Hessen to Bayern": the place after "to", once the sentence has named a place after "from".
_TO_PLACE = re.compile(rf"\b(?:moved|flew|travell?ed|relocated|drove)\sfrom\s{_NAMES}\sto\s(?P<place>{_NAMES})")


# The patterns above run only near what each match must hold (``anchor_windows``): scanning a text
# position by position with ``re`` costs ~0.1 ms per KB each, one RE2 pass for the anchors ~0.01.
# _CUED and _TO_PLACE: their cue words (as written there, ``\s`` as Python reads it) and a space; a
# match starts at its cue and is at most ~200 characters long (_NAMES: 4 words of up to 31).
_CUE_ANCHOR = compile_linear(
    (
        r"(?:Dear|Mr\.?|Mrs\.?|Ms\.?|Miss|Dr\.?|Prof\.?|[Pp]atient|[Cc]ustomer|[Cc]lient|[Tt]enant|[Aa]pplicant"
        r"|[Cc]ontact|[Aa]sk\sfor|[Nn]ame\sis|[Nn]ame:|I'm|I\sam|[Ss]igned|[Rr]egards,|[Ss]incerely,"
        r"|lives?\sin|living\sin|based\sin|located\sin|born\sin|grew\sup\sin|(?:moved|flew|travell?ed|relocated)"
        r"\s(?:from|to)|office\sin|lab\sin|branch\sin"
        r"|works?\s(?:at|for)|working\s(?:at|for)|employed\sby|[Ee]mployer:|order\sfrom|customer\sof"
        r"|on\sbehalf\sof|drove\sfrom)\s"
    ).replace(r"\s", WHITESPACE)
)
# _ORG: a legal form after whitespace; the match starts at most 6 words (~215 characters) before it.
_FORM_ANCHOR = compile_linear(
    WHITESPACE + "(?:" + "|".join(re.escape(form) for form in sorted(_LEGAL_FORMS, key=len, reverse=True)) + ")"
)
# _PARTNERS: "at"/"for"/… and the capitalised word before the first comma (no comma, no space in it).
_PARTNER_ANCHOR = compile_linear(
    rf"(?:at|for|from|with|by){WHITESPACE}[A-Z\x{{C0}}-\x{{DE}}][^,{WHITESPACE[1:-1]}]{{0,30}},"
)


# The three anchors' chunks in one RE2 set pass per chunk (``AnchorGroup``): ``find_cued_names`` and
# ``find_organisations`` read the same text one after the other.
_ANCHORS = AnchorGroup([_CUE_ANCHOR, _FORM_ANCHOR, _PARTNER_ANCHOR])
_CUE_CHUNKS, _FORM_CHUNKS, _PARTNER_CHUNKS = (_ANCHORS.member(index) for index in range(3))


# Where a _CUED or _TO_PLACE match can start: each of their cues begins with one of these strings, or
# ("I am", "on behalf of") that many characters before one. Found by ``str.find`` in each window, then the
# pattern is tried at those places only (as ``_matches`` in ``pii``): in a text dense with cues (every window
# holds one) a scan of every position by ``re`` cost ~0.15 ms per KB.
_CUE_STARTS: tuple[tuple[str, int], ...] = (
    *((word, 0) for word in ("Dear", "Mr", "Ms", "Miss", "Dr", "Prof", "I'm", "Regards,", "regards,", "Sincerely,")),
    *((word, 0) for word in ("sincerely,", "Signed", "signed", "Employer", "employer", "Ask", "ask", "Name", "name")),
    *((word, 0) for word in ("Patient", "patient", "Customer", "customer", "Client", "client", "Tenant", "tenant")),
    *((word, 0) for word in ("Applicant", "applicant", "Contact", "contact", "liv", "based", "located", "born")),
    *((word, 0) for word in ("grew", "moved", "flew", "travel", "relocated", "drove", "office", "lab", "branch")),
    *((word, 0) for word in ("work", "employed", "order")),
    ("am", 2),  # "I am"
    ("behalf", 3),  # "on behalf of"
)


def _cue_starts(text: str, low: int, high: int) -> list[int]:
    """The places in ``text[low:high]`` where a cue of ``_CUE_STARTS`` may start, in order."""
    found = set()
    find = text.find
    for literal, back in _CUE_STARTS:
        at = find(literal, low, high)
        while at >= 0:
            found.add(at - back)
            at = find(literal, at + 1, high)
    return sorted(at for at in found if at >= low)


def _tried_at(pattern: re.Pattern[str], text: str, starts: list[int], high: int) -> Iterator[re.Match[str]]:
    """``pattern.finditer(text, starts[0], high)`` for a pattern that can match only at ``starts``."""
    resume = 0
    for at in starts:
        if at < resume:
            continue
        match = pattern.match(text, at, high)
        if match is not None:
            yield match
            resume = match.end()


# The same places for long windows: every occurrence of the strings in the text found at once (``Literals``, ~0.3
# ms per 32 KB), then each window's own. A ``str.find`` loop per string costs ~0.5 ns per character of the windows
# per string (~25 ns for the ~50 strings): from ~12 KB of windows on, the one pass costs less.
_CUE_LITERALS = Literals(word for word, _ in _CUE_STARTS)
_CUE_BACK = dict(_CUE_STARTS)
_ONE_PASS_FROM = 12 * 1024


def _cue_starts_in(places: list[tuple[int, str]], at: list[int], low: int, high: int) -> list[int]:
    """``_cue_starts(text, low, high)`` from ``places`` (``_CUE_LITERALS.find(text)``; ``at``: their places)."""
    found = set()
    for index in range(bisect.bisect_left(at, low), bisect.bisect_left(at, high)):
        place, word = places[index]
        if place + len(word) <= high:  # as ``str.find(word, low, high)``: the whole word inside the window
            found.add(place - _CUE_BACK[word])
    return sorted(place for place in found if place >= low)


def _windows_and_starts(text: str) -> list[tuple[int, int, list[int]]]:
    """The windows of ``_CUE_ANCHOR`` and, in each, where a ``_CUED`` or ``_TO_PLACE`` match can start."""
    windows = anchor_windows(_CUE_CHUNKS, text, 32, 448)
    if sum(high - low for low, high in windows) < _ONE_PASS_FROM:
        return [(low, high, _cue_starts(text, low, high)) for low, high in windows]
    places = _CUE_LITERALS.find(text)
    at = [place for place, _ in places]
    return [(low, high, _cue_starts_in(places, at, low, high)) for low, high in windows]


def find_cued_names(text: str) -> list[Finding]:
    """Names right after words that say what they are: "Dear …", "lives in …", "works at …"."""
    found: list[Finding] = []
    windows = _windows_and_starts(text)
    for _, high, starts in windows:
        for match in _tried_at(_CUED, text, starts, high):
            group = match.lastgroup
            assert group is not None
            kind: PiiEntity = "person" if group == "person" else "location" if group == "place" else "organization"
            value = trim(match.group(group))
            if looks_like_code(value):
                continue
            found.append(Finding(kind, match.start(group), match.start(group) + len(value), value))
    for _, high, starts in windows:
        for match in _tried_at(_TO_PLACE, text, starts, high):
            value = trim(match.group("place"))
            if looks_like_code(value):
                continue
            found.append(Finding("location", match.start("place"), match.start("place") + len(value), value))
    return found


# _ORG's windows around each legal form itself (after whitespace), where the 1 KB chunks with one cover much of
# the text (a text with a firm in every few sentences): _ORG is tried at every capital of a window (~0.1 ms per KB).
_FORM_LITERALS = Literals(_LEGAL_FORMS)


def _form_windows(text: str) -> list[tuple[int, int]]:
    """Where _ORG can match: ``anchor_windows(_FORM_ANCHOR, text, 288, 32)``, or, where those hold more than
    ``_ONE_PASS_FROM`` characters, the same reach around every occurrence of a legal form after whitespace
    (``_FORM_ANCHOR``'s matches, overlapping ones included): every match holds one, starting at most ~215
    characters before it and ending where it ends (its lookahead reads one more)."""
    windows = anchor_windows(_FORM_CHUNKS, text, 288, 32)
    if sum(high - low for low, high in windows) < _ONE_PASS_FROM:
        return windows
    spans = [(at - 1, at + len(form)) for at, form in _FORM_LITERALS.find(text) if at and text[at - 1].isspace()]
    return merge_windows(spans, 288, 32, len(text))


def find_organisations(text: str) -> list[Finding]:
    """Organisations named with a legal form, or as a list of partners after "at", "for", "from"."""
    orgs = finditer_in(_ORG, text, _form_windows(text))
    found = [Finding("organization", m.start(), m.end(), m.group()) for m in orgs]
    partners = finditer_in(_PARTNERS, text, anchor_windows(_PARTNER_CHUNKS, text, 32, 224))
    found += [Finding("organization", m.start("org"), m.end("org"), m.group("org")) for m in partners]
    return [f for f in found if not looks_like_code(f.value)]


def correct_kind(text: str, finding: Finding, allowed: frozenset[PiiEntity], extend: bool = True) -> Finding | None:
    """The model's finding with sentence-opening words cut off and its kind set by the words before it.

    None: the finding is dropped (a lone capitalised word the model calls an organisation).
    ``extend``: a person takes in one capitalised word just before it (spaCy often drops a first name;
    the fast recogniser has already weighed that word, and taking it in adds "Could Naidu").
    """
    lead = _LEADING.match(finding.value)
    if lead is not None and len(finding.value) > lead.end():
        start = finding.start + lead.end()
        finding = Finding(finding.kind, start, finding.end, finding.value[lead.end() :])
    before = text[max(0, finding.start - 40) : finding.start]
    kind: PiiEntity = finding.kind
    # "Isabelle Valentin" read as only "Valentin": take in one capitalised word just before it.
    previous = _PREVIOUS.search(before, max(0, len(before) - 33)) if extend and kind == "person" else None
    if previous is not None and not _LEADING.match(previous.group(1) + " "):
        start = finding.start - len(previous.group(0))
        finding = Finding(kind, start, finding.end, text[start : finding.end])
        before = text[max(0, start - 40) : start]
    # The cues end where ``before`` ends: each is matched once, at the start of the reversed text (``_at_end``;
    # the person, firm and place cues but "from … to" are at most 23 characters long, as the search of the
    # last 24 characters this replaces assumed).
    backwards = before[::-1]
    if lead is not None or _PERSON_CUE_END.match(backwards):
        kind = "person"
    elif _ORG_CUE_END.match(backwards) and finding.kind == "person" and "-" in finding.value:
        kind = "organization"  # "works at Heath-Cervantes": a double-barrelled firm, not a person
    elif finding.kind != "organization" and (_PLACE_CUE_END.match(backwards) or _FROM_TO_CUE_END.match(backwards)):
        kind = "location"
    elif kind == "organization" and " " not in finding.value and not _ORG_CUE_END.match(backwards):
        # One capitalised word the model calls a firm is, in prompts, far more often a product, a
        # language or a class name ("Python", "Decimal") than an employer.
        return None
    if kind not in allowed:
        return finding
    return Finding(kind, finding.start, finding.end, finding.value)
