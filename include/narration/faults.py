"""Chaos hook for rehearsals and the fault-injection tests: kill the worker mid-chunk or fail chosen items.

Driven by ``NARRATION_FAULTS`` (a JSON object or list of objects); unset, empty or unparsable it does nothing.

Each rule names a ``step`` (synthesize, align, fallback, render) and optionally a ``chunk`` id, plus one action:

- ``{"step": "synthesize", "kill_after": 2}``: SIGKILL the process right after the 2nd item of a chunk was freshly
  written, as an out-of-memory kill would. An item skipped because it was already done does not count, so the
  retry, which skips it, runs through.
- ``{"step": "synthesize", "kill_mid_item": 2}``: SIGKILL inside the 2nd item, after its first output was written
  and before its record, to rehearse a half-finished item.
- ``{"step": "align", "fail_items": ["a3"]}``: raise :class:`InjectedFault` from the backend call of those items,
  as a backend crash on one input would.
- ``{"step": "synthesize", "hang_items": ["a3"]}``: block forever in the backend call of those items, as a hung
  model or device would; only the task's execution timeout ends it.

Never set it in production; the worker logs a warning whenever a rule is active.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from narration.errors import ItemFault

log = logging.getLogger(__name__)

ENV_VAR = "NARRATION_FAULTS"


class InjectedFault(ItemFault, RuntimeError):
    """A failure raised on purpose by the chaos hook."""


@dataclass(frozen=True)
class FaultRule:
    step: str
    chunk: str | None = None
    kill_after: int | None = None
    kill_mid_item: int | None = None
    fail_items: frozenset[str] = field(default_factory=frozenset)
    hang_items: frozenset[str] = field(default_factory=frozenset)

    def applies(self, step: str, chunk_id: str) -> bool:
        return self.step == step and (self.chunk is None or self.chunk == chunk_id)


def active_rules(environ: dict[str, str] | None = None) -> list[FaultRule]:
    """The rules in ``NARRATION_FAULTS``; malformed configuration is logged and ignored (the hook stays harmless)."""
    raw = (environ if environ is not None else os.environ).get(ENV_VAR, "").strip()
    if not raw:
        return []
    try:
        doc = json.loads(raw)
        specs = doc if isinstance(doc, list) else [doc]
        rules = [FaultRule(step=str(spec["step"]), chunk=spec.get("chunk"), kill_after=spec.get("kill_after"),
                           kill_mid_item=spec.get("kill_mid_item"),
                           fail_items=frozenset(spec.get("fail_items") or ()),
                           hang_items=frozenset(spec.get("hang_items") or ())) for spec in specs]
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        log.warning("ignoring %s: not a valid fault rule list (%s)", ENV_VAR, exc)
        return []
    log.warning("CHAOS HOOK ACTIVE (%s): %s", ENV_VAR, raw)
    return rules


class FaultPlan:
    """The rules that apply to one chunk step; the pipeline calls it at fixed points of every item."""

    def __init__(self, step: str, chunk_id: str, environ: dict[str, str] | None = None):
        self.step = step
        self.rules = [r for r in active_rules(environ) if r.applies(step, chunk_id)]

    def before_backend(self, item_id: str) -> None:
        """Raise :class:`InjectedFault` when ``item_id`` is chosen to crash the backend; block when it is chosen to
        hang."""
        for rule in self.rules:
            if item_id in rule.hang_items:
                log.warning("chaos hook: hanging in the %s backend call of item %r", self.step, item_id)
                threading.Event().wait()
            if item_id in rule.fail_items:
                raise InjectedFault(f"injected {self.step} failure for item {item_id!r} ({ENV_VAR})")

    def mid_item(self, position: int) -> None:
        """Inside the item at 1-based ``position`` of its chunk, after its first output and before its record."""
        if any(rule.kill_mid_item == position for rule in self.rules):
            _kill(f"inside item {position} of the {self.step} chunk")

    def after_item(self, position: int, fresh: bool, flush: Callable[[], None] | None = None) -> None:
        """After the item at 1-based ``position`` was finished; ``fresh`` is False when it was skipped as done.
        ``flush`` waits for writes still in flight, so the kill lands after the item's outputs are in S3."""
        if fresh and any(rule.kill_after == position for rule in self.rules):
            if flush is not None:
                flush()
            _kill(f"after item {position} of the {self.step} chunk")


def _kill(where: str) -> None:
    log.warning("chaos hook: killing worker process %d %s", os.getpid(), where)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os.kill(os.getpid(), signal.SIGKILL)
