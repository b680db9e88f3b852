<?xml version="1.0" encoding="UTF-8"?>
<!-- The demo's pronunciation lexicon: names in samples/evening-bulletin.jsonl that voices read from their spelling. -->
<lexicon version="1.0" xmlns="http://www.w3.org/2005/01/pronunciation-lexicon"
         alphabet="ipa" xml:lang="en-GB">
  <lexeme>
    <grapheme>Mousehole</grapheme>
    <alias>mowzel</alias>
  </lexeme>
  <lexeme>
    <grapheme>RNLI</grapheme>
    <alias>R. N. L. I.</alias>
  </lexeme>
  <lexeme>
    <grapheme>Siobhan</grapheme>
    <phoneme>ʃɪˈvɔːn</phoneme>
  </lexeme>
</lexicon>
