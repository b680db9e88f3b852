"""Chaos hook for rehearsals and the fault-injection tests: kill the worker mid-chunk or fail chosen items.

Driven by ``NARRATION_FAULTS`` (a JSON object or list of objects); unset, empty or unparsable it does nothing. A step
applies it as wrappers around its storage and its backend (:meth:`FaultPlan.wrap_storage`,
:meth:`FaultPlan.wrap_backend`), so its item loop knows nothing of it; with no rule for the step they return what
they were given.

Each rule names a ``step`` (synthesize, align, fallback, render) and optionally a ``chunk`` id, plus one action:

- ``{"step": "synthesize", "kill_after": 2}``: SIGKILL the process right after the record of the chunk's 2nd item
  was written to S3, as an out-of-memory kill would. An item skipped because it was already done writes no record,
  so the retry, which skips it, runs through.
- ``{"step": "synthesize", "kill_mid_item": 2}``: SIGKILL inside the 2nd item, after its first output was written
  and before its record, to rehearse a half-finished item.
- ``{"step": "synthesize", "kill_after_segments": 3}``: SIGKILL right after the 3rd segment record of a long
  item was written in this process (segments reused from an earlier run write none), to rehearse a worker killed
  mid-item that resumes at its first unfinished segment.
- ``{"step": "align", "fail_items": ["a3"]}``: raise :class:`InjectedFault` from the backend call of those items
  (the render step, which has no backend, when it reads the item's audio), as a backend crash on one input would.
  The backend call is recognised by the item's script.
- ``{"step": "synthesize", "hang_items": ["a3"]}``: block forever at that same point, as a hung model or device
  would; only the task's execution timeout ends it.

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
from typing import TYPE_CHECKING, Any, TypeVar

from narration.errors import ItemFault

if TYPE_CHECKING:
    from narration.layout import BatchLayout
    from narration.schema import ChunkSpec

B = TypeVar("B")
S = TypeVar("S")

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
    kill_after_segments: int | None = None
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
                           kill_after_segments=spec.get("kill_after_segments"),
                           fail_items=frozenset(spec.get("fail_items") or ()),
                           hang_items=frozenset(spec.get("hang_items") or ())) for spec in specs]
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        log.warning("ignoring %s: not a valid fault rule list (%s)", ENV_VAR, exc)
        return []
    log.warning("CHAOS HOOK ACTIVE (%s): %s", ENV_VAR, raw)
    return rules


class FaultPlan:
    """The rules that apply to one chunk step, and the wrappers that carry them out."""

    def __init__(self, step: str, chunk_id: str, environ: dict[str, str] | None = None):
        self.step = step
        self.rules = [r for r in active_rules(environ) if r.applies(step, chunk_id)]

    def before_backend(self, item_id: str | None) -> None:
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

    def after_item(self, position: int) -> None:
        """After the record of the item at 1-based ``position`` of its chunk was written."""
        if any(rule.kill_after == position for rule in self.rules):
            _kill(f"after item {position} of the {self.step} chunk")

    def after_segment(self, count: int) -> None:
        """After the ``count``-th segment record this process wrote."""
        if any(rule.kill_after_segments == count for rule in self.rules):
            _kill(f"after segment {count} of a long item in the {self.step} chunk")

    def wrap_backend(self, backend: B, chunk: ChunkSpec) -> B:
        """``backend`` (a synthesizer or an aligner) with this plan's item faults in its per-item call."""
        chosen = set().union(*(rule.fail_items | rule.hang_items for rule in self.rules)) if self.rules else set()
        if not chosen:
            return backend
        from narration.lexicons import item_tokens  # what the step gives its backend (lexicon phrases applied)

        scripts = {item.item_id: item_tokens(item) for item in chunk.items if item.item_id in chosen}
        return _FaultyBackend(backend, self, scripts)  # type: ignore[return-value]

    def wrap_storage(self, storage: S, layout: BatchLayout, chunk: ChunkSpec, record: Callable[[str], str],
                     backend_input: Callable[[str], str] | None = None) -> S:
        """``storage`` with this plan's kills at its writes: ``record(item_id)`` is the key an item's record is
        written to (last). ``backend_input(item_id)``, for a step with no backend object, is the key whose read
        stands for the item's backend call."""
        if not self.rules:
            return storage
        return _FaultyStorage(storage, self, layout, chunk, record, backend_input)  # type: ignore[return-value]


class _FaultyBackend:
    """A backend whose per-item call first runs :meth:`FaultPlan.before_backend` for the item whose script it got."""

    def __init__(self, backend: Any, plan: FaultPlan, scripts: dict[str, list]):
        self._backend = backend
        self._plan = plan
        self._scripts = scripts

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def _item_for(self, tokens: list) -> str | None:
        """The item whose script is ``tokens``, or holds them as a segment (a long item's)."""
        tokens = list(tokens)
        first = tokens[0].index if tokens else 0
        return next((item_id for item_id, script in self._scripts.items()
                     if script[first:first + len(tokens)] == tokens), None)

    def synthesize(self, tokens, *args, **kwargs):
        self._plan.before_backend(self._item_for(tokens))
        return self._backend.synthesize(tokens, *args, **kwargs)

    def align(self, samples, sample_rate, tokens, *args, **kwargs):
        self._plan.before_backend(self._item_for(tokens))
        return self._backend.align(samples, sample_rate, tokens, *args, **kwargs)

    def align_many(self, items):
        """The batched call: an item whose fault fires fails alone; the others go to the backend together."""
        results: list = [None] * len(items)
        passed = []
        for n, (_, _, tokens, _) in enumerate(items):
            try:
                self._plan.before_backend(self._item_for(tokens))
                passed.append(n)
            except InjectedFault as exc:
                results[n] = exc
        for n, result in zip(passed, self._backend.align_many([items[n] for n in passed]) if passed else []):
            results[n] = result
        return results


class _FaultyStorage:
    """Storage that kills the process after an item's first output (``kill_mid_item``) or its record
    (``kill_after``), and runs the item faults when an item's backend input is read."""

    def __init__(self, storage: Any, plan: FaultPlan, layout: BatchLayout, chunk: ChunkSpec,
                 record: Callable[[str], str], backend_input: Callable[[str], str] | None):
        self._storage = storage
        self._plan = plan
        self._layout = layout
        self._items = [(position, item.item_id, layout.item_prefix(item.item_id))
                       for position, item in enumerate(chunk.items, start=1)]
        self._records = {record(item_id): position for position, item_id, _ in self._items}
        self._inputs = {backend_input(item_id): item_id for _, item_id, _ in self._items} if backend_input else {}
        self._started: set[int] = set()
        self._segments_written = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._storage, name)

    def _written(self, key: str) -> None:
        if self._layout.segment_record_index(key) is not None:
            self._segments_written += 1
            self._plan.after_segment(self._segments_written)
            return
        if key in self._records:
            self._plan.after_item(self._records[key])
            return
        position = next((position for position, _, prefix in self._items if key.startswith(prefix)), None)
        if position is not None and position not in self._started:
            self._started.add(position)
            self._plan.mid_item(position)

    def put_bytes(self, key: str, *args, **kwargs) -> str:
        written = self._storage.put_bytes(key, *args, **kwargs)
        self._written(key)
        return written

    def put_text(self, key: str, *args, **kwargs) -> str:
        written = self._storage.put_text(key, *args, **kwargs)
        self._written(key)
        return written

    def put_json(self, key: str, *args, **kwargs) -> str:
        written = self._storage.put_json(key, *args, **kwargs)
        self._written(key)
        return written

    def upload_file(self, key: str, *args, **kwargs) -> str:
        written = self._storage.upload_file(key, *args, **kwargs)
        self._written(key)
        return written

    def get_bytes(self, key: str) -> bytes:
        if key in self._inputs:
            self._plan.before_backend(self._inputs[key])
        return self._storage.get_bytes(key)

    def download_file(self, key: str, *args, **kwargs) -> str:
        if key in self._inputs:
            self._plan.before_backend(self._inputs[key])
        return self._storage.download_file(key, *args, **kwargs)


def _kill(where: str) -> None:
    log.warning("chaos hook: killing worker process %d %s", os.getpid(), where)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os.kill(os.getpid(), signal.SIGKILL)
