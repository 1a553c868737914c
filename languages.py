"""Whisper's languages as people name them: "Chinese – zh" in the page's menu, "english" in the APIs."""

import re

import pycountry

from models import LANGUAGE_CODES

# The languages people subtitle most, first in the menu; the others follow by name.
MOST_USED_LANGUAGES = ("en", "zh", "es", "fr", "de", "ja", "pt", "ru", "ko", "it", "ar", "hi")


def language_name(code: str) -> str:
    """A language's English name from ISO 639 (pycountry), without qualifiers such as "(macrolanguage)"."""
    if code == "jw":  # Whisper's code for Javanese; ISO 639-1 says jv
        code = "jv"
    found = pycountry.languages.get(**{"alpha_2" if len(code) == 2 else "alpha_3": code})
    name = getattr(found, "common_name", None) or getattr(found, "name", code)
    return re.sub(r" \(.*\)$", "", name)


def language_choices() -> list[tuple[str, str]]:
    """The language menu: (shown, value) pairs such as ("Chinese – zh", "zh"), the most used first."""
    rest = sorted((code for code in LANGUAGE_CODES if code not in MOST_USED_LANGUAGES), key=language_name)
    return [("Detect it", "auto")] + [
        (f"{language_name(code)} – {code}", code) for code in (*MOST_USED_LANGUAGES, *rest)
    ]
