grapheme: SQL
alias: sequel
