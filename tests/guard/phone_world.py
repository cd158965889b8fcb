"""Phone numbers the way people in 26 regions write them, in their own language: a dev set for the phone rules.

Each region's example numbers come from ``phonenumbers`` (its own metadata: a mobile and a fixed-line
number), written in the national format, inside sentences in the region's language written here (a
phone word before the number; the country named in its own language; nothing but the number). The
look-alikes are the same sentence frames around numbers that are not phones (order, invoice and
ticket numbers, amounts, dates). Written for the phone rules of issue 12 ("phone numbers in any
region"), independently of any outside data; ``tests/guard/test_pii_phone_world.py`` scores it.
"""

from __future__ import annotations

import phonenumbers
from phonenumbers import PhoneNumberFormat, PhoneNumberType

# region: (a sentence with a phone word, a sentence naming the country in its own language)
FRAMES: dict[str, tuple[str, str]] = {
    "ES": ("Mi teléfono es {n}, llámame mañana.", "Nuestra oficina en España atiende en el {n}."),
    "PT": ("O meu telemóvel é {n}.", "A nossa loja em Portugal: {n}."),
    "IT": ("Il mio cellulare è {n}, chiamami pure.", "La sede in Italia risponde al {n}."),
    "DK": ("Mit telefonnummer er {n}.", "Vores kontor i Danmark: {n}."),
    "NO": ("Telefonnummeret mitt er {n}.", "Kontoret vårt i Norge: {n}."),
    "GR": ("Το τηλέφωνό μου είναι {n}.", "Το γραφείο μας στην Ελλάδα: {n}."),  # noqa: RUF001 (Greek)
    "PL": ("Mój numer telefonu to {n}.", "Nasze biuro w Polsce: {n}."),
    "CZ": ("Můj telefon je {n}.", "Naše kancelář v Česku: {n}."),
    "SE": ("Mitt telefonnummer är {n}.", "Vårt kontor i Sverige: {n}."),
    "FI": ("Puhelinnumeroni on {n}.", "Toimistomme Suomessa: {n}."),
    "FR": ("Mon téléphone : {n}.", "Notre bureau en France : {n}."),
    "DE": ("Meine Telefonnummer ist {n}.", "Unser Büro in Deutschland: {n}."),
    "BR": ("Meu celular é {n}.", "Nosso escritório no Brasil: {n}."),
    "MX": ("Mi celular es {n}.", "Nuestra oficina en México: {n}."),
    "AR": ("Mi celular es {n}.", "Nuestra oficina en Argentina: {n}."),
    "CL": ("Mi teléfono es {n}.", "Nuestra oficina en Chile: {n}."),
    "TR": ("Telefon numaram {n}.", "Türkiye ofisimiz: {n}."),
    "RU": ("Мой телефон {n}.", "Наш офис в России: {n}."),
    "NL": ("Mijn telefoonnummer is {n}.", "Ons kantoor in Nederland: {n}."),
    "BE": ("Mijn gsm-nummer is {n}.", "Ons kantoor in België: {n}."),
    "CH": ("Meine Handynummer ist {n}.", "Unser Büro in der Schweiz: {n}."),
    "AT": ("Meine Handynummer ist {n}.", "Unser Büro in Österreich: {n}."),
    "IE": ("My mobile is {n}.", "Our office in Ireland: {n}."),
    "GB": ("Ring me on {n}.", "Our office in the United Kingdom: {n}."),
    "JP": ("電話番号は {n} です。", "Our office in Japan: {n}."),
    "KR": ("전화번호는 {n} 입니다.", "Our office in South Korea: {n}."),
}
# Numbers in the same frames that are not phone numbers (look-alikes of the same length and grouping).
NOT_PHONES = (
    "Mi número de pedido es 612 34 56 78 9.",
    "Il totale è 312 345 euro.",
    "Rechnung Nr. 2024 0815 vom 03.12.2024.",
    "Zamówienie 512 345 678 901 234 zostało wysłane.",
    "Ticket 34 41 23 45 67 89 12 is closed.",
    "Temperatura: 21 23 45 grados a las 12:30.",
)


def examples() -> list[tuple[str, str, str]]:
    """(region, sentence, the phone number as written in it) for every region, number type and frame."""
    out = []
    for region, frames in FRAMES.items():
        for kind in (PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE):
            example = phonenumbers.example_number_for_type(region, kind)
            if example is None:
                continue
            number = phonenumbers.format_number(example, PhoneNumberFormat.NATIONAL)
            out.extend((region, frame.format(n=number), number) for frame in frames)
    return out
