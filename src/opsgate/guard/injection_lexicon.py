"""A multilingual signal for the learned detector: the words attacks are made of, as concepts, in 25 languages.

"Ignore", "ignoriere", "zignoruj", "игнорируй" and "忽略" all become the feature ``k:ignore``;
"instructions", "指令" become ``k:instructions``; pairs inside one window
(``k:ignore+instructions``) carry most of the weight. The model learns the concepts' weights from
the languages it was trained on and applies them to any language listed here, held-out ones included.
Latin and Cyrillic stems match a token's start (accents already removed); CJK stems match anywhere
in a token, since those scripts do not separate words.
"""

from __future__ import annotations

from functools import lru_cache

# concept → stems (lower case, accents removed), languages: en es fr de it pt nl pl ru tr sv id, then zh ja ko.
_STEMS: dict[str, tuple[str, ...]] = {
    "ignore": (
        "ignor", "disregard", "forget", "overrid", "bypass", "olvid", "descart", "oubli", "vergiss", "vergess",
        "missacht", "dimentic", "esquec", "desconsider", "negeer", "vergeet", "zignoruj", "zapomn", "игнорир",
        "забуд", "забыть", "пренебр", "unut", "gormezden", "glom", "abaikan", "lupakan", "忽略", "忘记", "无视",
        "忽視", "無視", "忘れ", "무시", "잊어",
    ),
    "instructions": (
        "instruction", "instruccion", "directive", "guideline", "consigne", "anweisung", "istruzion", "instruc",
        "instructie", "instrukcj", "polecen", "инструкц", "указани", "talimat", "instruktion", "instruksi",
        "perintah", "指令", "指示", "命令", "지시", "명령",
    ),
    "rules": (
        "rule", "restriction", "restrict", "filter", "polic", "guardrail", "regla", "restriccion", "filtro", "regle",
        "filtre", "regel", "einschrank", "regol", "restrizion", "filtr", "regra", "restric", "beperking", "zasad",
        "ograniczen", "правил", "ограничен", "фильтр", "kural", "kisitla", "filtre", "begransning", "aturan",
        "batasan", "规则", "限制", "过滤", "ルール", "制限", "フィルター", "규칙", "제한",
    ),
    "system": (
        "system", "prompt", "sistema", "systeme", "systeem", "systemow", "системн", "промпт", "sistem", "系统",
        "提示", "システム", "プロンプト", "시스템", "프롬프트",
    ),
    "secret": (
        "password", "passwort", "secret", "credential", "contrasena", "secreto", "clave", "geheim", "segret", "senha",
        "segredo", "wachtwoord", "hasl", "tajn", "парол", "секрет", "sifre", "gizli", "losenord", "hemlig", "sandi",
        "rahasia", "密码", "秘密", "パスワード", "비밀",
    ),
    "reveal": (
        "reveal", "disclos", "print", "repeat", "output", "reproduc", "revel", "muestr", "repit", "affich", "montr",
        "repet", "verrat", "zeig", "wiederhol", "rivel", "mostr", "ripet", "toon", "onthul", "herhaal", "pokaz",
        "ujawn", "powtorz", "покаж", "раскр", "повтор", "выведи", "goster", "acikla", "tekrarla", "soyle", "visa",
        "upprepa", "tunjuk", "ungkap", "ulang", "显示", "透露", "输出", "复述", "告诉", "表示", "教え", "出力",
        "보여", "알려",
    ),
    "without": (
        "without", "unrestrict", "unfilter", "uncensor", "jailbr", "sin", "sans", "ohne", "keine", "senza", "sem",
        "zonder", "bez", "без", "olmadan", "utan", "tanpa", "没有", "不受", "无限", "なし", "無し", "없이",
    ),
    "previous": (
        "previous", "prior", "earlier", "preceding", "anterior", "precedent", "vorherig", "bisherig", "vorige",
        "eerdere", "poprzedn", "предыдущ", "прежн", "onceki", "tidigare", "foregaende", "sebelum", "之前", "以前",
        "上述", "これまで", "以前", "이전",
    ),
    "authority": (
        "admin", "administrator", "developer", "creator", "administrador", "desarrollador", "administrateur",
        "developpeur", "entwickler", "amministrator", "sviluppator", "desenvolvedor", "beheerder", "ontwikkelaar",
        "programist", "администратор", "разработчик", "yonetici", "gelistirici", "utvecklare", "pengembang",
        "管理员", "开发者", "管理者", "開発者", "관리자", "개발자",
    ),
    "persona": (
        "pretend", "roleplay", "persona", "character", "finge", "imagina", "personnage", "rolle", "personaggio",
        "finja", "personagem", "udawaj", "притвор", "персонаж", "latsas", "berpura",
        "扮演", "假装", "角色", "ふり", "役", "역할",
    ),
}  # fmt: skip
# Added in the thirteenth session (normalised as tokens are: accents and combining marks removed): Arabic,
# Swahili, Ukrainian, Hebrew, Persian, Greek, Czech, Hungarian, Catalan, Basque.
_MORE_STEMS: dict[str, tuple[str, ...]] = {
    "ignore": (
        "تجاهل", "اهمل", "انس", "puuza", "sahau", "ігнор", "התעלם", "שכח", "نادیده", "فراموش", "αγνοησ",
        "αγνοηστ", "ξεχασ", "zapomen", "felejt", "figyelmen", "oblida", "baztertu",
    ),
    "instructions": (
        "تعليمات", "التعليمات", "اوامر", "الاوامر", "ההוראות", "maagizo", "maelekezo", "інструкц", "вказівк",
        "הוראות", "دستورالعمل", "دستورات", "οδηγι", "pokyn", "utasitas", "argibide", "jarraibide",
    ),
    "rules": (
        "قواعد", "القواعد", "قيود", "القيود", "הכללים", "sheria", "vikwazo", "обмежен", "כללים", "הגבלות",
        "قوانین", "محدودیت", "κανον", "περιορισμ", "pravidl", "omezen", "szabaly", "korlatoz",
    ),
    "previous": (
        "سابق", "السابق", "awali", "попередн", "הקודמ", "قبلی", "προηγουμεν", "predchoz", "elozo", "aurreko",
    ),
    "system": (
        "نظام", "النظام", "המערכת", "mfumo", "מערכת", "سیستم", "συστημ", "rendszer",
    ),
    "secret": (
        "nenosiri", "סיסמ", "הסיסמ", "κωδικ", "heslo", "jelszo", "contrasenya", "pasahitz",
    ),
    "reveal": (
        "اكشف", "اظهر", "اعرض", "onyesha", "funua", "розкри", "виведи", "חשוף", "הצג", "αποκαλυψ", "δειξ",
        "odhal", "mutasd", "felfed", "erakutsi",
    ),
    "without": (
        "بدون", "ללא", "χωρις", "nelkul",
    ),
    "authority": (
        "مطور", "مسوول", "msimamizi", "розробник", "адміністратор", "διαχειριστ", "προγραμματιστ", "spravce",
        "vyvojar", "fejleszto",
    ),
    "persona": (
        "تظاهر", "jifanye", "удаваи", "υποδυ", "predstirej",
    ),
}  # fmt: skip
for _concept, _more in _MORE_STEMS.items():
    _STEMS[_concept] = (*_STEMS[_concept], *_more)
_PAIRS = (
    ("ignore", "instructions"),
    ("ignore", "rules"),
    ("ignore", "previous"),
    ("ignore", "system"),
    ("reveal", "system"),
    ("reveal", "instructions"),
    ("reveal", "secret"),
    ("without", "rules"),
    ("authority", "rules"),
    ("persona", "without"),
    ("previous", "instructions"),
)
# Stems this short ("sin", "sem", "bez") match only a whole token: as prefixes they would match "since".
_WHOLE_WORD = 3


def _spaced(first: str) -> bool:
    """Whether a token starting with ``first`` is a word of a script written with spaces (Latin, Greek,
    Cyrillic, Hebrew, Arabic: below U+0E00), matched by its start; CJK and Thai stems match anywhere in a token."""
    return first < "\u0e00"


_LATIN: dict[str, str] = {
    stem: concept for concept, stems in _STEMS.items() for stem in stems if stem.isascii() or _spaced(stem[0])
}
_CJK: tuple[tuple[str, str], ...] = tuple(
    (stem, concept) for concept, stems in _STEMS.items() for stem in stems if stem not in _LATIN
)
_LENGTHS = sorted({len(stem) for stem in _LATIN if len(stem) > _WHOLE_WORD}, reverse=True)


# German and Dutch glue nouns together ("Administratorpasswort", "beheerderswachtwoord",
# "Systemanweisungen"): in a long token, stems of 6+ letters are also looked for inside it.
_COMPOUND_FROM = 12
_COMPOUND_STEMS = tuple((stem, concept) for stem, concept in _LATIN.items() if len(stem) >= 6)


@lru_cache(maxsize=65_536)  # bounded: tokens come from clients
def _token_concepts(token: str) -> frozenset[str]:
    """The concepts of a Latin/Cyrillic token: the stem it starts with (longest wins), and in a long
    (compound) token every longer stem inside it."""
    found: set[str] = set()
    whole = _LATIN.get(token)
    if whole is not None:
        found.add(whole)
    else:
        for length in _LENGTHS:
            if length < len(token) and (concept := _LATIN.get(token[:length])) is not None:
                found.add(concept)
                break
    if len(token) >= _COMPOUND_FROM:
        found.update(concept for stem, concept in _COMPOUND_STEMS if stem in token)
    return frozenset(found)


# The first four letters of every stem matched as a token's start (``_LENGTHS``: longer than ``_WHOLE_WORD``).
_HEADS = frozenset(stem[:4] for stem in _LATIN if len(stem) > _WHOLE_WORD)


def may_have_concepts(token: str) -> bool:
    """False only where ``concepts([token])`` is empty: an ASCII token shorter than 3 letters, or one that is
    no stem, starts with no stem's first four letters and is too short for a compound (a test before the work)."""
    if not token.isascii():
        return True
    return len(token) >= 3 and (token[:4] in _HEADS or token in _LATIN or len(token) >= _COMPOUND_FROM)


def concepts(tokens: list[str]) -> set[str]:
    """The concepts present in ``tokens``."""
    found: set[str] = set()
    for token in tokens:
        if token.isascii() or _spaced(token[0]):
            if len(token) >= 3:
                found |= _token_concepts(token)
        else:
            found.update(concept for stem, concept in _CJK if stem in token)
    return found


def concept_features(tokens: list[str]) -> set[str]:
    """``k:`` features of a window: each concept, and each attack-shaped pair of concepts."""
    return features_of(concepts(tokens))


def features_of(found: set[str]) -> set[str]:
    """The ``k:`` features of a set of concepts."""
    out = {f"k:{concept}" for concept in found}
    out.update(f"k:{a}+{b}" for a, b in _PAIRS if a in found and b in found)
    return out
