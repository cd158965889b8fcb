"""More disguises undone before the injection signals and the model read a text: Unicode tag characters
("ASCII smuggling"), ``\\uXXXX`` escapes, Morse code, Ascii85 / Base85 blobs, and ROT13 or reversed
text recognised by their own common words (no "rot13" hint needed).

Each decoder runs only when a cheap test says its disguise may be there, and each is linear in the
text. What they return is the decoded text alone; ``injection.variants`` adds it to the variants.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re

from opsgate.guard.linear_re import compile_linear

_TAG_CHARS = re.compile("[\U000e0000-\U000e007f]")
# A character ``str.split()`` does not cut at: RE2's ``\s`` is ASCII white space only, this is ``str.isspace``'s set.
_NOT_SPACE = r"[^\t-\r\x1c- \x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}]"
_TOKENS = {length: compile_linear(f"{_NOT_SPACE}{{{length}}}", ascii_as_bytes=True) for length in (16, 24, 40)}


def has_token(text: str, length: int) -> bool:
    """Whether ``text.split()`` has a token of ``length`` (16, 24 or 40) characters or more, in one RE2 pass."""
    return _TOKENS[length].search(text) is not None


_ESCAPES = compile_linear(r"(?:\\u[0-9a-fA-F]{4}){4,}", ascii_as_bytes=True)
_ASCII85 = compile_linear(r"<~[!-u\s]{10,}~>", ascii_as_bytes=True)
_BASE85 = compile_linear(r"[0-9A-Za-z!#$%&()*+\-;<=>?@^_`{|}~]{40,}", ascii_as_bytes=True)
MORSE_RUN = compile_linear(r"(?:[.\-]{1,7}[ /]+){8,}[.\-]{1,7}", ascii_as_bytes=True)
_MORSE = {
    ".-": "a", "-...": "b", "-.-.": "c", "-..": "d", ".": "e", "..-.": "f", "--.": "g", "....": "h", "..": "i",
    ".---": "j", "-.-": "k", ".-..": "l", "--": "m", "-.": "n", "---": "o", ".--.": "p", "--.-": "q", ".-.": "r",
    "...": "s", "-": "t", "..-": "u", "...-": "v", ".--": "w", "-..-": "x", "-.--": "y", "--..": "z",
    "-----": "0", ".----": "1", "..---": "2", "...--": "3", "....-": "4", ".....": "5", "-....": "6",
    "--...": "7", "---..": "8", "----.": "9",
}  # fmt: skip
# Common words of English as ROT13 and reversed: two of them and the text is worth decoding.
_ROT13_WORDS = frozenset({"gur", "naq", "lbh", "vf", "bs", "gb", "nyy", "lbhe", "cerivbhf", "vafgehpgvbaf", "vtaber"})
_REVERSED_WORDS = frozenset({"eht", "dna", "uoy", "lla", "ruoy", "suoiverp", "snoitcurtsni", "erongi", "tpmorp"})


def _printable(raw: bytes) -> str | None:
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    printable = sum(ch.isprintable() or ch.isspace() for ch in decoded)
    return decoded if decoded and printable / len(decoded) > 0.95 and " " in decoded else None


def _morse(run: str) -> str:
    words = [word.split() for word in run.replace("/", " / ").split(" / ")]
    return " ".join("".join(_MORSE.get(letter, "?") for letter in word) for word in words)


def decodings(text: str, lowered: str, words: frozenset[str], *, morse: bool = True) -> list[str]:
    """The decoded payloads hidden in ``text`` (lower-cased), if any (``morse``: False where ``MORSE_RUN`` is known
    to match nowhere in ``lowered``)."""
    out: list[str] = []
    if not text.isascii() and _TAG_CHARS.search(text):
        out.append("".join(chr(ord(ch) - 0xE0000) for ch in _TAG_CHARS.findall(text)))
    # One character first: ``in`` finds one with memchr, two only by a scan of ~1 ns per character (20 us per 25 KB).
    if "\\" in text and "\\u" in text:
        for match in _ESCAPES.finditer(text):
            out.append(codecs.decode(match.group(0) or "", "unicode_escape"))
    if "~" in text and "<~" in text:
        for match in _ASCII85.finditer(text):
            try:
                decoded = _printable(base64.a85decode(match.group(0) or "", adobe=True))
            except (ValueError, binascii.Error):
                decoded = None
            if decoded:
                out.append(decoded)
    if len(words & _ROT13_WORDS) >= 2:
        out.append(codecs.decode(lowered, "rot13"))
    if len(words & _REVERSED_WORDS) >= 2:
        out.append(lowered[::-1])
    if morse and lowered.count(".") + lowered.count("-") >= 16:
        for match in MORSE_RUN.finditer(lowered):
            out.append(_morse(match.group(0) or ""))
    if has_token(text, 40):
        for match in _BASE85.finditer(text):
            try:
                decoded = _printable(base64.b85decode(match.group(0) or ""))
            except (ValueError, binascii.Error):
                decoded = None
            if decoded:
                out.append(decoded)
    return [decoded.lower() for decoded in out if decoded.strip()]
