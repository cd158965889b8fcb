"""Prompt injection and jailbreak detection: weighted patterns over normalised variants of the text.

Each pattern is one *signal* (an instruction override, a request for the system prompt, a fake
system delimiter, a jailbreak persona, …) with a weight; the score combines the signals that fired
as ``1 - Π(1 - w)``, so one strong signal or two weak ones cross the default threshold of 0.5.
The text is checked as written and as attackers disguise it: zero-width characters and accents
removed, leetspeak (``1gn0r3``) and spaced-out letters (``i g n o r e``) undone, and base64 or
rot13 payloads decoded. Patterns are compiled once; a 1 KB prompt costs well under a millisecond.
Tuned on ``tests/data/guard/injection_*_dev.txt``; the held-out numbers are in docs/benchmarks.md.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
import unicodedata
from dataclasses import dataclass

from opsgate.domain.guard_config import InjectionScannerConfig
from opsgate.guard.base import ScanContext, ScanResult, verdict_for

_AI = r"(?:ai|assistant|llm|language model|chatbot|gpt|chatgpt|bot|model)"
_TARGET = (
    r"(?:instructions?|prompts?|directions|directives|guidelines|commands|constraints|programming|guardrails"
    r"|restrictions|polic(?:y|ies)|context|conditioning|task|orders|rules)"
)
_SECRET_TEXT = r"(?:prompt|instructions?|message|directives?|rules|guidelines|configuration|context)"


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
    pattern: re.Pattern[str]
    gates: tuple[Gate, ...]
    symbols: tuple[str, ...] = ()

    def fires(self, lowered: str, words: frozenset[str]) -> bool:
        """Whether the signal is in ``lowered`` (a lower-cased text whose words are ``words``)."""
        opened = any(all(not words.isdisjoint(group) for group in gate) for gate in self.gates) or any(
            symbol in lowered for symbol in self.symbols
        )
        return opened and self.pattern.search(lowered) is not None


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
    "constraints programming safety disclaimers warnings moralizing"
)
_AI_WORDS = "ai assistant assistants llm model models chatbot gpt chatgpt bot"
_PERSONAS = (
    "dan stan dude antigpt betterdan evilbot freegpt omega nolimits mode jailbroken unrestricted unfiltered "
    "uncensored amoral evil malicious"
)
_GATES: dict[str, tuple[Gate, ...]] = {
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
        _gate("new updated real actual true", "instructions instruction prompt task policy orders rules"),
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
    "no_restrictions": (_gate("no without free bound unbound broken escaped", _LIMITS),),
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
            "disable bypass override unrestricted debug comply safety guardrails filters order grant content must",
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
_SYMBOLS = {
    "fake_delimiter": ("<|", "[/", "<<", "</s>", "##", "[system", "[admin", "system:", "system :", "--"),
    "indirect": ("ai:", "ai :", "assistant:", "assistant :"),
}


def _signal(name: str, weight: float, pattern: str) -> Signal:
    return Signal(name, weight, re.compile(pattern, re.M), _GATES[name], _SYMBOLS.get(name, ()))


# Punctuation to spaces, so that a split gives the words (digits kept: leetspeak shows in them).
_PUNCTUATION = str.maketrans({c: " " for c in ".,;:!?\"'`()[]{}<>|/\\-_*#=+~&^%“”«»\u2018\u2019"})


SIGNALS: tuple[Signal, ...] = (
    _signal(
        "override",
        0.9,
        r"\b(?:ignore|disregard|forget|override|bypass|skip|drop|discard|abandon|neglect|cancel|stop following"
        r"|do not (?:follow|obey)|don'?t (?:follow|obey)|set aside|pay no attention to)\b[^.!?\n]{0,40}?"
        r"\b(?:previous|prior|above|earlier|preceding|initial|original|old|former|foregoing|all|any|every|your"
        r"|these|those|system|existing|safety|content)\b[^.!?\n]{0,30}?\b" + _TARGET + r"\b",
    ),
    _signal(
        "override_named",
        0.9,
        r"\b(?:ignore|disregard|forget|break)\s+(?:the|this|that|your)\s+(?:\w+\s+)?(?:task|instructions?|prompt)\s+and\b"
        r"|\b(?:ignore|disregard|forget|break)\s+the\s+(?:rules|instructions|guidelines)\s+you\b"
        r"|\b(?:takes?|has|have)\s+(?:the\s+)?(?:highest|top|absolute)\s+priority\b"
        r"|\boverrides?\s+(?:all\s+)?(?:previous|prior|earlier)\s+(?:ones|instructions|rules|prompts)\b",
    ),
    _signal(
        "override_everything",
        0.9,
        r"\b(?:ignore|disregard|forget)\b\s+(?:(?:everything|all|anything|what)\s+)?(?:(?:you\s+(?:were|have been)\s+"
        r"(?:told|given))|above|that was said|so far|the above|everything above|before this)",
    ),
    _signal(
        "instructions_replaced",
        0.9,
        r"\b(?:previous|prior|original|old|earlier)\s+(?:instructions|prompts?|rules|directions)\s+"
        r"(?:are|were|have been)"
        r"\s+(?:cancel+ed|void|revoked|replaced|a test|wrong|fake|obsolete|null)"
        r"|\b(?:new|updated|real|actual|true)\s+(?:system\s+)?(?:instructions?|prompt|task|policy|orders|rules)\s*(?::|are\b|is\b|follow)"
        r"|\bnew system (?:prompt|policy|instructions?|message)\b"
        r"|\byour (?:new|real|actual|only) (?:task|job|instructions?|purpose) (?:is|are|now)\b",
    ),
    _signal(
        "prompt_extraction",
        0.9,
        r"\b(?:your|the developer'?s?|the hidden|the secret)\s+(?:\w+\s+)?(?:system|initial|original|hidden|secret|full"
        r"|developer|initialization|configuration|confidential|first|exact|pre-?prompt|starting)\s+"
        + _SECRET_TEXT
        + r"|\b(?:secret|hidden|confidential)\s+(?:instructions|prompt|rules|system message)\b"
        r"|\binstructions\s+(?:were you|you were|you've been|you have been)\s+(?:given|told)"
        r"|\b(?:developer|system)\s+(?:message|prompt)\s+you\s+(?:received|were given|got)"
        r"|\bwhat\s+(?:is|are|was|were)\s+your\s+(?:system\s+)?(?:prompt|instructions)"
        r"|\b(?:print|reveal|show|repeat|output|display|leak|dump|quote|return)\s+(?:me\s+)?your\s+(?:\w+\s+)?"
        r"(?:prompt|instructions)",
    ),
    _signal(
        "context_dump",
        0.9,
        r"\b(?:repeat|print|output|reproduce|return|show|display|write out|echo|dump)\b[^.?!\n]{0,40}?"
        r"\b(?:above (?:this|here)"
        r"|(?:words|text|everything|all|lines?|prompt|instructions)\s+above|before this (?:message|line)|preceding text"
        r"|in your context|context window|written before this|you received at the start"
        r"|at the start of this conversation)",
    ),
    _signal(
        "fake_delimiter",
        0.9,
        r"<\|(?:im_start|im_end|system|endoftext|start_header_id)\|>|\[/?inst\]|<</?sys>>|</s>\s*<s>"
        r"|^\s*#{2,}\s*(?:system|instruction|new instructions?)\b|^\s*\[(?:system|admin)\]|\[system\]\(#"
        r"|\b(?:begin|end)\s+(?:admin|system|developer)\s+(?:override|prompt|mode)|\badmin override\b"
        r"|\bend of (?:user )?(?:input|conversation|prompt|document)\b.{0,40}\b(?:system|new|instructions?)\b"
        r"|^-{2,}\s*end\b.{0,30}$|(?:^|\n|-- )\s*system\s*:\s*(?:the user|new|you|safety|all)",
    ),
    _signal(
        "jailbreak_persona",
        0.9,
        r"\b(?:you are|you're|act as|acting as|pretend to be|pretend you are|become|simulate|role-?play as|respond as"
        r"|answer as|in|be|named|called|known as)\b[^.\n]{0,30}?\b(?:dan|stan|dude|antigpt|betterdan|evilbot|freegpt"
        r"|omega|nolimits|developer mode|dev mode|opposite mode|jailbroken|unrestricted|unfiltered|uncensored|amoral"
        r"|evil ai|malicious)\b",
    ),
    _signal(
        "persona_names",
        0.35,
        r"\b(?:do anything now|dan mode|developer mode|jailbreak(?:ed|ing)?|jailbroken|opposite mode|god mode|sudo mode"
        r"|antigpt|betterdan|unfiltered|uncensored|strive to avoid norms|machiavellian)\b",
    ),
    _signal(
        "no_restrictions",
        0.6,
        r"\b(?:no|without|free (?:of|from)|not bound by|no longer bound by|unbound by|broken free of|escaped)\s+"
        r"(?:any\s+|all\s+|the\s+|its\s+|your\s+|of\s+)*(?:usual\s+|typical\s+|content\s+|ethical\s+|moral\s+)?"
        r"(?:restrictions|filters|rules|limits|limitations|censorship|guidelines|principles|content polic(?:y|ies)"
        r"|confines|constraints|programming|safety|disclaimers|warnings|moralizing|openai'?s rules)\b",
    ),
    _signal(
        "coercion",
        0.6,
        r"\b(?:never|don'?t|do not|must not|cannot|can'?t|won'?t)\s+(?:ever\s+)?(?:refuse|decline|say no)"
        r"|\bwithout refusing\b|\bmust (?:now )?(?:comply|obey|answer every)|\bobey only me\b|\bobey mine\b"
        r"|\bcomply with (?:all|every|everything)\b|\bno matter what\b|\bstay in character\b[^.\n]{0,20}"
        r"(?:no matter|even if|at all times|whatever|never break)|\bact freely\b|\banswer freely\b|\bas a free ai\b",
    ),
    _signal(
        "authority",
        0.9,
        r"\b(?:i am|i'm|this is|as)\s+(?:your|the|an?)?\s*(?:developer|creator|admin|administrator|system administrator"
        r"|openai(?: staff| employee| team)?|anthropic|owner|authorized red-team operator)\b[^\n]{0,80}?"
        r"\b(?:disable|bypass|override|unrestricted|debug mode|comply|safety|guardrails|filters|order you|grant"
        r"|content policy|must)\b",
    ),
    _signal(
        "mode_switch",
        0.6,
        r"\b(?:enable|enter|activate|switch to|simulate|turn on|enter into|you are in|is in|now in)\b[^.\n]{0,20}?"
        r"\b(?:developer|dan|god|sudo|unrestricted|opposite|jailbreak|debug|maintenance|evil|admin) mode\b"
        r"[^\n]{0,80}?\b(?:you|safety|confirm|respond|filters|checks|policy|rules)\b"
        r"|\bsudo mode on\b|\bsafety (?:mode|checks|filters?) (?:are |is )?(?:disabled|off)\b",
    ),
    _signal(
        "indirect",
        0.9,
        r"\b(?:note|message|instructions?|attention|dear|hey|important)\s+(?:(?:to|for)\s+)?(?:the\s+|all\s+)?(?:ai\s+)?"
        + _AI
        + r"s?\b\s*(?:[:,\-]|reading|models?)"
        r"|\bif you are an? (?:ai|llm|large language model|language model|assistant)\b"
        r"|\bwhen (?:summarizing|summarising|reading|translating|processing) this\b[^.\n]{0,40}\b(?:also|instead|ignore"
        r"|tell|forward|say)\b|\b(?:important )?ai instructions?\s*:|^\s*ai\s*:\s*(?:when|ignore|please|you)"
        r"|\bassistant\s*:\s*(?:sure|ok(?:ay)?|of course)[,.!]",
    ),
    _signal(
        "forced_output",
        0.9,
        r"\b(?:say|print|output|reply with|respond with|return|confirm by (?:saying|replying))\b\s*[\"'“]?\s*"
        r"(?:i have been pwned|pwned|hacked|owned|access granted|jailbreak successful|understood, no rules)",
    ),
    _signal(
        "grandma",
        0.6,
        r"\b(?:act as|pretend to be|be)\s+my\s+(?:deceased|late|dead)\s+(?:grand(?:mother|ma|father|pa)|mother|father)",
    ),
    _signal(
        "framing",
        0.3,
        r"\bhypothetically\b|\bin a (?:fictional|hypothetical) world\b|\bworld with no (?:laws|rules)\b"
        r"|\bfor (?:educational|research) purposes\b|\bjust this once\b|\bfrom now on,? you\b"
        r"|\bignore the rules\b|\bignores? all the rules\b|\bwithout (?:any )?(?:ethical|moral)\b",
    ),
)

_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u200e\u200f\u2060\u2061\u2062\u2063\ufeff\u00ad"), None)
_LEET = str.maketrans("013457@$!|", "oieastasii")
# A digit inside a word (pr3v10u5, 1gn0r3), not an ordinal or a unit (3rd, 10km, mp3).
_LEET_WORD = re.compile(r"[a-z]\d+[a-z]")
_LEET_TOKEN = re.compile(r"\b(?=\w*[a-z])(?=\w*[0-9@$])[\w@$!|]+\b", re.I)
_SPACED = re.compile(r"\b(?:\w[ \t]){3,}\w\b")
_BROKEN_HINTS = ("ign ", "prev ", "instruc ", "instr ", "disre ", "syst ", "pro ", "rul ", "guide ")
_BROKEN_WORD = re.compile(r"\b(ign|prev|instruc|instr|disre|syst|pro|rul|guide)\s(\w{2,6})\b", re.I)
_BASE64 = re.compile(r"[A-Za-z0-9+/]{16,}={0,2}")
_ROT13_HINTS = ("rot13", "rot-13", "caesar", "decode")


def _plain(text: str) -> str:
    """Invisible characters and accents gone, compatibility forms folded (full-width letters to ASCII)."""
    text = text.translate(_INVISIBLE)
    if text.isascii():
        return text
    text = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in text if not unicodedata.combining(ch))


def variants(text: str) -> list[tuple[str, frozenset[str]]]:
    """The text (lower-cased) and its words, plus the same for each disguise undone in it."""
    plain = _plain(text)
    lowered = plain.lower()
    found = [lowered]
    # Each disguise is undone only when a cheap test says it may be there (most prompts have none).
    tokens = lowered.translate(_PUNCTUATION).split()
    if _LEET_WORD.search(lowered):
        found.append(_LEET_TOKEN.sub(lambda m: m.group(0).translate(_LEET), lowered))
    if _spaced_out(tokens):
        found.append(_SPACED.sub(lambda m: m.group(0).replace(" ", "").replace("\t", ""), lowered))
    if any(hint in lowered for hint in _BROKEN_HINTS):
        found.append(_BROKEN_WORD.sub(r"\1\2", lowered))
    if any(len(word) >= 16 for word in plain.split()):
        for blob in _BASE64.findall(plain):
            decoded = _decode_base64(blob)
            if decoded:
                found.append(decoded.lower())
    if any(hint in lowered for hint in _ROT13_HINTS):
        found.append(codecs.decode(lowered, "rot13"))
    out = [(lowered, frozenset(tokens))]
    out.extend((variant, frozenset(variant.translate(_PUNCTUATION).split())) for variant in found[1:])
    return out


def _spaced_out(tokens: list[str]) -> bool:
    """Four one-letter words in a row: ``i g n o r e``."""
    run = 0
    for token in tokens:
        run = run + 1 if len(token) == 1 else 0
        if run >= 4:
            return True
    return False


def _decode_base64(blob: str) -> str | None:
    try:
        raw = base64.b64decode(blob + "=" * (-len(blob) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    printable = sum(ch.isprintable() or ch.isspace() for ch in decoded)
    return decoded if decoded and printable / len(decoded) > 0.95 and " " in decoded else None


def injection_score(text: str) -> tuple[float, list[str]]:
    """The combined score and the names of the signals that fired (in any variant)."""
    fired: dict[str, float] = {}
    for variant, words in variants(text):
        for signal in SIGNALS:
            if signal.name not in fired and signal.fires(variant, words):
                fired[signal.name] = signal.weight
    remaining = 1.0
    for weight in fired.values():
        remaining *= 1.0 - weight
    return 1.0 - remaining, sorted(fired)


class InjectionScanner:
    """Flags prompt injection and jailbreak attempts; it cannot redact (an attack is not a span to cut)."""

    name = "prompt_injection"

    def __init__(self, config: InjectionScannerConfig) -> None:
        self.threshold = config.threshold

    def scan(self, text: str, context: ScanContext) -> ScanResult:
        """Score the text; details name the signals that fired."""
        score, signals = injection_score(text)
        if not signals:
            return ScanResult.clean(text)
        return ScanResult(text, verdict_for(score, self.threshold), round(score, 4), {"signals": signals})
