"""Print the bad-input corpus table (every hostile manifest and voice, and the answer it got); exit 1 when any
case was not answered as expected. ``python -m tests.reliability.corpus_table`` (``make bad-input-table``)."""

from __future__ import annotations

from tests.reliability.badinput import format_table, run_all


def main() -> int:
    results = run_all()
    print(format_table(results))
    return 1 if any(problems for _, _, problems in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
