"""The languages a manifest line may ask for: one home for the list and the default, light to import (the DAG's
Params form reads them at parse time)."""

from __future__ import annotations

# Which number of a slashed date is the day: the US reads 3/4/2025 as March 4th, Britain as 3 April. A bare "en"
# follows the US convention (the language default, en-us, of the aligners' models).
DATE_ORDER = {"en": "mdy", "en-us": "mdy", "en-gb": "dmy"}
SUPPORTED_LANGUAGES = frozenset(DATE_ORDER)
DEFAULT_LANGUAGE = "en"
DEFAULT_LOCALE = "en-us"


def base_language(tag: str) -> str:
    """"en-US" -> "en": the primary language of a tag, as Whisper and PLS lexicons compare languages."""
    return tag.replace("_", "-").split("-")[0].lower()
