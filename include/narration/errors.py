"""What a failure means for the batch, so that an ``except`` clause can say which kind it handles.

Every exception the product raises on purpose derives from :class:`NarrationError`, on one of two branches:

- :class:`ItemFault`: this item's input is bad, or a backend failed on it. The item fails (or goes to the fallback
  aligner) with the message; the rest of its chunk goes on.
- :class:`InfrastructureFault`: storage, a device or the worker failed, not the item. The step fails and Airflow
  retries it, which redoes only what is missing. A :class:`ConfigurationFault` is one no retry can change (S3
  refused the request, a name no registry knows): the task fails at once.

Each class also keeps its builtin base (``ValueError``, ``RuntimeError``), so code that catches those still does.
A crash that is none of these (a bug, CUDA out of memory) inside an item's work is that item's failure.
"""

from __future__ import annotations


class NarrationError(Exception):
    """A failure the product raises on purpose; see the module for its two branches."""


class ItemFault(NarrationError):
    """Bad input, or a backend that failed on this item: the item fails, the chunk goes on."""


class InfrastructureFault(NarrationError):
    """Storage, a device or the worker failed: the step fails and is retried."""


class ConfigurationFault(InfrastructureFault):
    """An infrastructure fault no retry can change (a refused request, an unknown name): the step stops."""

