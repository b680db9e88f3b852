<?xml version="1.0" encoding="UTF-8"?>
<lexicon version="1.0" xmlns="http://www.w3.org/2005/01/pronunciation-lexicon" alphabet="ipa" xml:lang="en-US">
  <lexeme><grapheme>New York</grapheme><alias>noo yawk</alias></lexeme>
  <lexeme><grapheme>Tom - Jerry</grapheme><alias>tom and jerry</alias></lexeme>
</lexicon>
