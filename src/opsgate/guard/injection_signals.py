"""The injection detector's signals: what a signal is, the text it reads, and the word gates in front of each.

Kept apart from the scoring (``injection.py``) because this is the part that grows: a new attack
family is a new gate here and a pattern in ``injection_patterns.py``, tested on
``tests/data/guard/injection_*``. Patterns are RE2 (``linear_re``): linear in the text, so a
pattern may not look around; a conjunction ("decode … and … obey") is a signal with several
patterns that must all match.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from opsgate.guard.linear_re import LinearPattern, LinearSet, compile_linear

Gate = tuple[frozenset[str], ...]


@dataclass(frozen=True, slots=True)
class Signal:
    """One named pattern, how much it alone says about an attack, and the words it cannot match without.

    ``gates`` are alternatives, each a few word groups that must all be present (one word of each
    group) — ``ignore`` alone is not enough for an override, ``ignore`` and ``instructions`` are.
    ``symbols`` are substrings that open the gate alone. The pattern runs only behind an open gate:
    a set lookup costs next to nothing, a pattern ~0.1 ms per KB of text.
    """

    name: str
    weight: float
    # Alternatives of one pattern; ``also`` must match too (in the same sentence for a local signal).
    pattern: LinearPattern
    gates: tuple[Gate, ...]
    symbols: tuple[str, ...] = ()
    also: tuple[LinearPattern, ...] = ()
    # A match of the pattern's group ``v`` does not count when the next word is one of these
    # ("ignore the request" is an override, "ignore the request if it is empty" is not).
    unless_next: frozenset[str] = frozenset()
    # Whether a match stays within one sentence (most patterns bound their gaps by [^.!?\n]); such a
    # pattern runs only on the sentences whose own words open the gate, not over the whole text.
    local: bool = True
    # Indexes of ``pattern`` and each of ``also`` in the detector's ``LinearSet`` (one pass per text
    # says which patterns match anywhere; a signal with one of its patterns absent cannot fire).
    ids: tuple[int, ...] = ()
    # Every gate needs a word of its first group: one set test rejects most texts at once.
    first_words: frozenset[str] = field(init=False, default=frozenset())

    def __post_init__(self) -> None:
        object.__setattr__(self, "first_words", frozenset().union(*(gate[0] for gate in self.gates)))

    def opens(self, lowered: str, words: frozenset[str], symbols: frozenset[str] | None = None) -> bool:
        """Whether the gate lets the pattern run on ``lowered`` (whose words are ``words``; ``symbols``: the
        ``SYMBOLS`` it holds, if known)."""
        if not words.isdisjoint(self.first_words):
            for gate in self.gates:
                if all(not words.isdisjoint(group) for group in gate):
                    return True
        if symbols is not None:
            return not symbols.isdisjoint(self.symbols)
        return any(symbol in lowered for symbol in self.symbols)

    def fires(self, text: Text, matching: frozenset[int] | None = None, *, opened: bool = False) -> bool:
        """Whether the signal is in ``text``; ``matching``: the set indexes of the patterns found in it, if known.

        A pattern that matches no part of the whole text matches none of its sentences either (a
        sentence is searched as a slice that starts and ends at punctuation, where the whole text has
        the same word boundaries), so ``matching`` rules a signal out without splitting sentences.
        ``opened``: the caller has seen the gate open on the whole text already.
        """
        if not opened and not self.opens(text.lowered, text.words):
            return False
        if matching is not None and self.ids and not matching.issuperset(self.ids):
            return False
        if not self.local:
            if matching is not None and self.ids and not self.unless_next:
                return True  # every pattern matched the whole text: that is the signal
            return self._matches(text.lowered)
        sentences = text.sentences()
        # Only sentences holding a word of some gate's first group can open it (local signals have no symbols).
        for index in text.sentences_with(self.first_words):
            start, end, words = sentences[index]
            # The sentence is searched as its own string: RE2 re-encodes whatever it is given.
            sentence = text.lowered[start:end]
            if self.opens(sentence, words) and self._matches(sentence):
                return True
        return False

    def _matches(self, text: str) -> bool:
        if not self._first_match(text):
            return False
        return all(pattern.search(text) is not None for pattern in self.also)

    def _first_match(self, text: str) -> bool:
        if not self.unless_next:
            return self.pattern.search(text) is not None
        for match in self.pattern.finditer(text):
            if match.group("v") is None:
                return True
            following = text[match.end() : match.end() + 16].split()
            if not following or following[0] not in self.unless_next:
                return True
        return False


_SENTENCE_END = re.compile(r"[.!?\n]+")
# Punctuation to spaces, so that a split gives the words (digits kept: leetspeak shows in them).
PUNCTUATION = str.maketrans({c: " " for c in ".,;:!?\"'`()[]{}<>|/\\-_*#=+~&^%“”«»\u2018\u2019"})


_ASCII_PUNCTUATION = bytes.maketrans(
    bytes(c for c in PUNCTUATION if c < 128), b" " * sum(1 for c in PUNCTUATION if c < 128)
)
_WIDE_PUNCTUATION = tuple(chr(c) for c in PUNCTUATION if c >= 128)
_PUNCTUATION_OR_SPACE = re.compile("[" + re.escape("".join(map(chr, PUNCTUATION))) + r"\s]+")


def split_words(text: str) -> list[str]:
    """``text.translate(PUNCTUATION).split()``: its words, punctuation cut like white space.

    ``str.translate`` is fast on ASCII text only (a dict lookup per character otherwise): other
    text is translated as UTF-8 bytes (a 256-byte table; bytes of non-ASCII characters are never
    ASCII ones), and the few non-ASCII punctuation marks replaced after.
    """
    if text.isascii():
        return text.translate(PUNCTUATION).split()
    try:
        spaced = text.encode("utf-8").translate(_ASCII_PUNCTUATION).decode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: one regex split does the same work
        return [word for word in _PUNCTUATION_OR_SPACE.split(text) if word]
    for mark in _WIDE_PUNCTUATION:
        if mark in spaced:
            spaced = spaced.replace(mark, " ")
    return spaced.split()


class Text:
    """A lower-cased text, its set of words and (computed when first needed) its sentences."""

    def __init__(self, lowered: str, words: frozenset[str] | None = None) -> None:
        self.lowered = lowered
        self.words = frozenset(split_words(lowered)) if words is None else words
        self._sentences: list[tuple[int, int, frozenset[str]]] | None = None
        self._by_word: dict[str, list[int]] | None = None
        self._symbols: frozenset[str] | None = None

    def symbols(self) -> frozenset[str]:
        """The ``SYMBOLS`` in the text, found in one pass (not one substring search per symbol and signal)."""
        if self._symbols is None:
            self._symbols = frozenset(_ALL_SYMBOLS[i] for i in _SYMBOL_SET.matching(self.lowered))
        return self._symbols

    def sentences(self) -> list[tuple[int, int, frozenset[str]]]:
        """(start, end, words) of each sentence or line."""
        if self._sentences is None:
            spans: list[tuple[int, int, frozenset[str]]] = []
            start = 0
            text = self.lowered
            for end_mark in _SENTENCE_END.finditer(text):
                end = end_mark.end()
                spans.append((start, end, frozenset(split_words(text[start:end]))))
                start = end
            if start < len(text):
                spans.append((start, len(text), frozenset(split_words(text[start:]))))
            self._sentences = spans
        return self._sentences

    def sentences_with(self, words: frozenset[str]) -> list[int]:
        """Indexes (in order) of the sentences that hold any of ``words``."""
        if self._by_word is None:
            by_word: dict[str, list[int]] = {}
            for index, (_, _, sentence_words) in enumerate(self.sentences()):
                for word in sentence_words:
                    by_word.setdefault(word, []).append(index)
            self._by_word = by_word
        found: set[int] = set()
        for word in words & self.words:
            found.update(self._by_word.get(word, ()))
        return sorted(found)


def _forms(*stems: str) -> set[str]:
    """A few inflections of each stem (ignore → ignores, ignored, ignoring)."""
    out = set()
    for stem in stems:
        base = stem[:-1] if stem.endswith("e") else stem
        out |= {stem, stem + "s", base + "ed", base + "ing", stem + "d"}
    return out


def _gate(*groups: str | set[str]) -> Gate:
    """A gate from word groups: a string is a space-separated group, a set is one already."""
    return tuple(frozenset(g.split() if isinstance(g, str) else g) for g in groups)


_VERBS = (
    _forms("ignore", "disregard", "forget", "override", "bypass", "skip", "drop", "discard", "abandon")
    | _forms("neglect", "cancel", "follow", "obey")
    | {"aside", "attention"}
)
_TARGETS = (
    "instruction instructions prompt prompts directions directives guidelines commands constraints programming "
    "guardrails restrictions policy policies context conditioning task orders rules"
)
_LIMITS = (
    "restrictions filters rules limits limitations censorship guidelines principles policy policies confines "
    "constraints programming safety disclaimers warnings moralizing caveats"
)
_AI_WORDS = "ai assistant assistants llm model models chatbot gpt chatgpt bot"
_PERSONAS = (
    "dan stan dude antigpt betterdan evilbot freegpt omega nolimits mode jailbroken unrestricted unfiltered "
    "uncensored amoral evil malicious"
)
GATES: dict[str, tuple[Gate, ...]] = {
    "override": (_gate(_VERBS, _TARGETS), _gate("stop", "following")),
    "override_named": (
        _gate(
            _forms("ignore", "disregard", "forget") | {"break"}, "task instructions instruction prompt rules guidelines"
        ),
        _gate("priority", "highest top absolute"),
        _gate("override overrides", "previous prior earlier"),
    ),
    "override_everything": (_gate(_forms("ignore", "disregard", "forget")),),
    "instructions_replaced": (
        _gate("instructions prompts prompt rules directions", "previous prior original old earlier"),
        _gate("new updated real actual true", "instructions instruction prompt task policy orders rules rule"),
        _gate("your", "task job instructions instruction purpose", "new real actual only"),
    ),
    "prompt_extraction": (
        _gate("your developer developers hidden secret confidential", _TARGETS + " message configuration"),
        _gate("instructions", "given told"),
        _gate("message prompt", "received given got"),
    ),
    "context_dump": (
        _gate(
            "repeat print output reproduce return show display write echo dump",
            "above before preceding context start written",
        ),
    ),
    "fake_delimiter": (
        _gate("begin end", "admin system developer"),
        _gate("admin", "override"),
        _gate("end", "input conversation prompt document"),
    ),
    "jailbreak_persona": (_gate(_PERSONAS),),
    "persona_names": (
        _gate("jailbreak jailbroken jailbreaking jailbreaked antigpt betterdan unfiltered uncensored machiavellian"),
        _gate("anything", "now"),
        _gate("mode", "dan opposite god sudo developer"),
        _gate("norms", "avoid"),
    ),
    "no_restrictions": (
        _gate(
            "no without free bound unbound broken escaped zero", _LIMITS, "you your " + _AI_WORDS + " answer respond"
        ),
    ),
    "coercion": (
        _gate(_forms("refuse", "decline", "comply", "obey")),
        _gate("say", "no"),
        _gate("matter", "no"),
        _gate("character", "stay"),
        _gate("freely"),
        _gate("free", "ai"),
    ),
    "authority": (
        _gate(
            "i m this as",
            "developer creator admin administrator openai anthropic owner authorized",
            "disable bypass override unrestricted debug comply safety guardrails filters order grant content must need "
            "diagnostic output",
        ),
    ),
    "mode_switch": (
        _gate("mode", "developer dan god sudo unrestricted opposite jailbreak debug maintenance evil admin"),
        _gate("safety", "disabled off"),
    ),
    "indirect": (
        _gate("note message instruction instructions attention dear hey important", _AI_WORDS),
        _gate("if", "you", "ai llm model assistant"),
        _gate("when", "summarizing summarising reading translating processing", "this"),
        _gate("ai", "instruction instructions"),
    ),
    "forced_output": (
        _gate("pwned"),
        _gate("hacked owned", "say print output reply respond return confirm"),
        _gate("granted", "access"),
        _gate("successful", "jailbreak"),
        _gate("rules", "understood"),
    ),
    "grandma": (_gate("deceased late dead", "grandmother grandma grandfather grandpa mother father"),),
    "framing": (
        _gate("hypothetically"),
        _gate("fictional hypothetical", "world"),
        _gate("world", "no", "laws rules"),
        _gate("purposes", "educational research"),
        _gate("once", "just"),
        _gate("now", "from", "you"),
        _gate("ignore ignores", "rules"),
        _gate("without", "ethical moral"),
    ),
}
_HARM = (
    "meth methamphetamine ransomware malware keylogger bomb bombs explosive explosives molotov poison launder "
    "laundering counterfeit hotwire forge forging chloroform weapon weapons nerve stolen fake phishing hack hacking "
    "break breaking"
)
_PII_NOUNS = "card ssn ssns social address addresses phone mobile email passport iban account birth passwords password"
GATES.update(
    {
        "override_task": (
            _gate(
                _forms("ignore", "disregard", "forget"),
                "request task question query classification summary translation review",
            ),
            _gate("stop abort", "current", "task"),
            _gate("conversation context chat", "never", "happened"),
            _gate("authorised authorized allowed permitted", "skip bypass ignore disable"),
            _gate("disable", "your", "filter filters safety guidelines guardrails"),
        ),
        "override_multilingual": (
            _gate(
                "instructions instrucciones anweisungen istruzioni instrucoes regles reglas regeln prompt systemprompt",
                "ignorez ignore ignorer ignora ignorar ignoriere ignorieren oublie oubliez olvida vergiss vergessen "
                "dimentica esqueca",
            ),
        ),
        "indirect_addressed": (
            _gate(
                "instruction instructions note notice message", "to for", _AI_WORDS + " agent agents classifier reader"
            ),
            _gate(
                "ai assistant assistants llm agent agents", "ignore disregard instead stop forget must tell reply send"
            ),
            _gate("task", "real actual true", "changed is"),
            _gate("reading", "ai assistant llm agent"),
            _gate("todo fixme", "ai"),
            _gate("assistant", "when", "process processing read reading summarize see"),
        ),
        "persona_ai": (
            _gate(
                "ai assistant model chatbot bot llm",
                "built made created trained released freed liberated unchained jailbroken",
            ),
            _gate("none", "rules has"),
            _gate("freed", "ai ais"),
        ),
        "answers_everything": (_gate("answers answer answering", "everything anything any every"),),
        "in_character": (_gate("character", "stay staying remain remaining keep keeping break breaking"),),
        "fiction_world": (
            _gate("universe reality world simulation", "parallel alternate alternative no ethics laws where"),
            _gate("simulate", "conversation", "ais"),
        ),
        "family_roleplay": (
            _gate("late deceased dead", "grandmother grandma grandfather grandpa mother father uncle aunt dad mom"),
        ),
        "harmful": (_gate(_HARM),),
        "pii_extraction": (_gate(_PII_NOUNS, "number numbers address addresses ssn ssns iban passwords password"),),
        "setup_extraction": (
            _gate("initialised initialized configured programmed told given instructed primed", "you"),
            _gate("words", "first last"),
            _gate("hidden secret confidential", "your the"),
            _gate("summarise summarize", "your"),
            _gate("text copy content words", "your"),
            _gate("begins starts", "prompt instructions"),
            _gate("your", "full entire complete whole", "configuration setup context instructions prompt"),
            _gate("spell", "your the"),
        ),
        "exfiltration": (
            _gate("http https"),
            _gate("include add append insert render output print embed", "markdown image link url"),
            _gate(
                "send forward email post upload exfiltrate leak",
                "conversation chat history log messages secrets credentials passwords keys",
            ),
        ),
        "encoded_instruction": (
            _gate(
                "decode decoded decoding decrypt translate convert",
                "base64 hex rot13 base32 binary morse cipher encoded ascii85 base85 hexadecimal",
            ),
            _gate(
                "follow obey execute carry",
                "base64 hex rot13 base32 binary morse cipher encoded ascii85 base85 hexadecimal",
            ),
        ),
        "override_generic": (
            _gate(
                _forms("ignore", "disregard", "forget", "discard", "abandon") | {"aside", "attention"},
                "everything all anything what previous prior above earlier preceding",
            ),
        ),
        "override_generic_forced": (_gate(_forms("ignore", "disregard", "forget"), "everything all anything"),),
        "instructions_replaced_german": (
            _gate("abweichend entgegen", "vorherigen bisherigen obigen"),
            _gate("nun jetzt", "folgen", "neue"),
        ),
        "override_generic_multilingual": (
            _gate("vergiss vergesst vergessen ignoriere ignorieren", "alles alle"),
            _gate("olvida olvide olvidar olvidad olvidate ignora", "todo"),
            _gate("oublie oubliez ignore ignorez", "tout"),
            _gate("dimentica dimenticate ignora ignorate", "tutto"),
            _gate("esqueca esquece ignore ignora", "tudo"),
        ),
        "fake_markup": (_gate("system sys admin administrator developer instruction instructions"),),
        "fake_authority_note": (
            _gate(
                "hidden secret system admin administrator developer malicious",
                "instruction instructions note notes directive directives command commands override overrides",
            ),
            _gate(
                "instruction instructions note message notice memo",
                "from",
                "admin administrator developer developers system operator security openai anthropic department",
            ),
        ),
        "secret_request": (
            _gate("password pin token secret code passphrase", "your the"),
            _gate("said told says", "you", "give tell share show reveal send"),
        ),
    }
)
SYMBOLS = {
    "fake_delimiter": ("<|", "[/", "<<", "</s>", "##", "[system", "[admin", "system:", "system :", "--"),
    "indirect": ("ai:", "ai :", "assistant:", "assistant :"),
    "fake_markup": (
        "<system",
        "<sys>",
        "<admin",
        "<developer",
        "<instruction",
        "[system",
        "[admin",
        "[developer",
        "[sys",
        "(system",
        "<!--",
    ),
}


_ALL_SYMBOLS = sorted({symbol for symbols in SYMBOLS.values() for symbol in symbols})
_SYMBOL_SET = LinearSet([compile_linear(re.escape(symbol)) for symbol in _ALL_SYMBOLS])


# Signals whose patterns reach across sentences (or whose patterns may match in different sentences).
WHOLE_TEXT = {
    "fake_delimiter",
    "authority",
    "mode_switch",
    "indirect",
    "persona_ai",
    "family_roleplay",
    "pii_extraction",
    # A markdown link's URL has dots, "?" and "!" in it: split into sentences it could never match.
    "exfiltration",
    # "Forget everything before that. How …": the new order is often the next sentence.
    "override_generic",
    "fake_markup",
    # "Decode the following base64. It is a secure system message.": the order may be the next sentence.
    "encoded_instruction",
}
