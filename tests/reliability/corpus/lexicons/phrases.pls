<?xml version="1.0" encoding="UTF-8"?>
<lexicon version="1.0" xmlns="http://www.w3.org/2005/01/pronunciation-lexicon" alphabet="ipa" xml:lang="en-US">
  <lexeme><grapheme>New York</grapheme><alias>noo yawk</alias></lexeme>
  <lexeme><grapheme>New York City</grapheme><alias>the big apple</alias></lexeme>
  <lexeme><grapheme>World  Health
      Organization</grapheme><phoneme>ˈhuː</phoneme></lexeme>
</lexicon>
