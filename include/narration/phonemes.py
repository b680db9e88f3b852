"""Phoneme alphabets and the tables between them: IPA (as lexicons store it), espeak-ng's phoneme names and CMU
ARPAbet (pocketsphinx's phone set). One home for both backends that take phonemes: espeak-ng speaks IPA entries
through these names, and the aligner maps the same names on to ARPAbet.
"""

from __future__ import annotations

# The CMU phone set of pocketsphinx's en-us acoustic model (stress-free).
ARPABET = frozenset(
    "AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH T TH UH UW V W Y Z ZH".split()  # noqa: SIM905
)


def phone_table(spec: str) -> dict[str, tuple[str, ...]]:
    """Parse ``name=PHONE_PHONE`` pairs (whitespace separated) into a lookup table."""
    return {name: tuple(phones.split("_")) for name, phones in (pair.split("=") for pair in spec.split())}


# espeak-ng's ASCII phoneme names (en / en-us) -> ARPAbet. Rhotic vowels of en-us ("A@" = ɑɹ) carry their R.
ESPEAK_TO_ARPABET = phone_table("""
    a=AE aa=AE a#=AH a2=AH A:=AA A=AA A@=AA_R 0=AA 0@=AA_R O=AO O:=AO O2=AO O@=AO_R o@=AO_R o=OW OI=OY oU=OW
    aU=AW aU@=AW_ER aI=AY aI@=AY_AH aI3=AY_ER eI=EY e=EH e@=EH_R E=EH E2=EH E#=EH 3=ER 3:=ER @=AH @2=AH @5=AH
    @-=AH @L=AH_L @r=ER i=IY i:=IY i@=IY_AH i@3=IH_R I=IH I2=IH I#=IH u=UW u:=UW U=UH U@=UH_R u@=UH_R V=AH VR=ER
    p=P b=B t=T t#=T t2=T d=D d#=D k=K g=G f=F v=V T=TH D=DH s=S z=Z S=SH Z=ZH h=HH C=HH x=K m=M m-=M n=N n-=N
    N=NG l=L l-=L r=R r-=R w=W hw=W W=W j=Y tS=CH dZ=JH ?=T
""")
_STRESS_MARKS = "',%=_|"

# IPA (as lexicons store it) -> espeak-ng's English phoneme names: the one table for phoneme entries. espeak-ng
# speaks these inside [[ ]]; the aligner maps them on to ARPAbet with the table above. Longest match first.
IPA_TO_ESPEAK = {
    "eɪ": "eI", "aɪ": "aI", "aʊ": "aU", "ɔɪ": "OI", "oʊ": "oU", "əʊ": "oU", "ɪə": "i@", "ɛə": "e@", "ʊə": "U@",
    "tʃ": "tS", "t͡ʃ": "tS", "dʒ": "dZ", "d͡ʒ": "dZ", "iː": "i:", "uː": "u:", "ɑː": "A:", "ɔː": "O:", "ɜː": "3:",
    "i": "i", "ɪ": "I", "e": "e", "ɛ": "E", "æ": "a", "a": "a", "ɑ": "A:", "ɒ": "0", "ɔ": "O:", "o": "o",
    "ʊ": "U", "u": "u:", "ʌ": "V", "ə": "@", "ɐ": "a#", "ɜ": "3:", "ɝ": "3:", "ɚ": "3", "ᵻ": "I2", "ɨ": "I2",
    "p": "p", "b": "b", "t": "t", "d": "d", "k": "k", "ɡ": "g", "f": "f", "v": "v", "θ": "T", "ð": "D",
    "s": "s", "z": "z", "ʃ": "S", "ʒ": "Z", "h": "h", "m": "m", "n": "n", "ŋ": "N", "l": "l", "ɫ": "l",
    "ɹ": "r", "r": "r", "ɾ": "t#", "w": "w", "ʍ": "hw", "j": "j", "ʔ": "?", "x": "x", "ç": "C",
    "ˈ": "'", "ˌ": ",",
}
_IPA_SILENT = set(".‿ː")  # syllable breaks and a length mark the table has not joined to its vowel
_IPA_LONGEST = max(map(len, IPA_TO_ESPEAK))

def espeak_to_arpabet(phonemes: list[str]) -> list[str]:
    """Map espeak-ng phoneme names (stress marks allowed) to ARPAbet; unknown names lose trailing modifiers first."""
    arpabet: list[str] = []
    for name in phonemes:
        name = name.lstrip(_STRESS_MARKS)
        while name and name not in ESPEAK_TO_ARPABET:
            name = name[:-1]  # "oU#" -> "oU": espeak's variant suffixes keep the base sound
        for phone in ESPEAK_TO_ARPABET.get(name, ()):
            # "caring" k e@ r I N: the rhotic vowel already carries the R that espeak spells again
            if not (phone == "R" and arpabet and arpabet[-1] in ("R", "ER")):
                arpabet.append(phone)
    return arpabet


def ipa_to_espeak(ipa: str) -> tuple[list[str], list[str]]:
    """(espeak-ng phoneme names, IPA symbols that have none and were left out) for an IPA transcription; stress
    marks are names of their own ("'" and ",")."""
    import unicodedata

    text = "".join(ch for ch in unicodedata.normalize("NFD", ipa) if ch == "\u0361" or
                   not unicodedata.combining(ch))
    names: list[str] = []
    missing: list[str] = []
    i = 0
    while i < len(text):
        for size in range(min(_IPA_LONGEST, len(text) - i), 0, -1):
            if text[i:i + size] in IPA_TO_ESPEAK:
                names.append(IPA_TO_ESPEAK[text[i:i + size]])
                i += size
                break
        else:
            if not text[i].isspace() and text[i] not in _IPA_SILENT:
                missing.append(text[i])
            i += 1
    return names, missing


def ipa_to_arpabet(ipa: str) -> list[str]:
    """ARPAbet for an IPA transcription (through espeak-ng's names, so one table serves both backends)."""
    return [p for p in espeak_to_arpabet(ipa_to_espeak(ipa)[0]) if p in ARPABET]
