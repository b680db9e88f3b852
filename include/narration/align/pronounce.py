"""Pronunciations for words outside the aligner's dictionary: espeak-ng's phonemes mapped to CMU ARPAbet.

pocketsphinx aborts a whole alignment on one unknown word; names, made-up words and rare words get a
pronunciation here instead, with a plain letter-to-sound fallback when espeak-ng yields nothing usable.
"""

from __future__ import annotations

import re

from narration.phonemes import ARPABET, espeak_to_arpabet, phone_table

# Last resort, one letter at a time (rough, but it keeps an alignment alive).
LETTER_TO_ARPABET = phone_table("""
    a=AE b=B c=K d=D e=EH f=F g=G h=HH i=IH j=JH k=K l=L m=M n=N o=AA p=P q=K r=R s=S t=T u=AH v=V w=W x=K_S
    y=Y z=Z
""")
_DIGRAPHS = phone_table("ch=CH sh=SH th=TH ph=F ng=NG ck=K qu=K_W ee=IY oo=UW ou=AW ai=EY ay=EY oa=OW ea=IY")


def letters_to_arpabet(word: str) -> list[str]:
    letters = re.sub(r"[^a-z]", "", word.lower())
    phones: list[str] = []
    i = 0
    while i < len(letters):
        if letters[i : i + 2] in _DIGRAPHS:
            phones.extend(_DIGRAPHS[letters[i : i + 2]])
            i += 2
            continue
        if not (phones and letters[i] == letters[i - 1]):  # doubled letters are one sound
            phones.extend(LETTER_TO_ARPABET[letters[i]])
        i += 1
    return phones


def pronounce(word: str, *, espeak_voice: str = "en-us") -> str:
    """An ARPAbet pronunciation for ``word`` (space separated), via espeak-ng when it is available."""
    phones: list[str] = []
    try:
        from narration.synth.espeak import espeak_engine

        phones = espeak_to_arpabet(espeak_engine().phonemes(word, voice=espeak_voice))
    except (OSError, ImportError, RuntimeError):
        phones = []  # no espeak-ng here: the letter rules below still give the aligner something
    phones = [p for p in phones if p in ARPABET] or letters_to_arpabet(word)
    if not phones:
        raise ValueError(f"no pronunciation for {word!r}")
    return " ".join(phones)
