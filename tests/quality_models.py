"""The real quality checkers the tests share: loaded once per module, and failing loudly when one is missing."""

from __future__ import annotations

from narration.quality import QualityChecks, QualitySettings
from narration.settings import Settings


def loaded_checks(*, language_id: bool = False, voice_similarity: bool = False) -> QualityChecks:
    """QualityChecks with just the asked-for checkers, loaded; a checker that did not load fails the caller."""
    checks = QualityChecks(Settings(), QualitySettings(language_id=language_id, voice_similarity=voice_similarity))
    checks.load()
    missing = (language_id and checks.language is None) or (voice_similarity and checks.speaker is None)
    assert not missing, checks.unavailable
    return checks
