"""Every exception the product raises on purpose says what it means: an item fault or an infrastructure fault."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import narration
from narration.errors import ConfigurationFault, InfrastructureFault, ItemFault, NarrationError


def _product_exceptions() -> dict[str, type[BaseException]]:
    found = {}
    for module in pkgutil.walk_packages(narration.__path__, "narration."):
        if module.name.endswith("__main__"):  # importing it runs the command line
            continue
        loaded = importlib.import_module(module.name)
        for name, obj in vars(loaded).items():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == module.name:
                found[f"{module.name}.{name}"] = obj
    return found


def test_every_product_exception_is_on_one_branch():
    exceptions = _product_exceptions()
    assert len(exceptions) >= 14
    for name, cls in exceptions.items():
        if cls.__module__ == "narration.errors":
            continue
        assert issubclass(cls, ItemFault) != issubclass(cls, InfrastructureFault), name


@pytest.mark.parametrize("path, branch, builtin", [
    ("narration.align.base:AlignmentError", ItemFault, RuntimeError),
    ("narration.manifests:ManifestError", ItemFault, ValueError),
    ("narration.voices:VoiceError", ItemFault, ValueError),
    ("narration.synth.espeak:EspeakError", ItemFault, RuntimeError),
    ("narration.storage:StorageUnreachable", InfrastructureFault, RuntimeError),
    ("narration.storage:StorageRefused", ConfigurationFault, RuntimeError),
    ("narration.align:UnknownAlignerError", ConfigurationFault, ValueError),
    ("narration.synth:UnknownSynthesizerError", ConfigurationFault, ValueError),
    ("narration.preflight:ConfigurationError", ConfigurationFault, ValueError),
])
def test_classes_keep_their_builtin_base_beside_their_branch(path, branch, builtin):
    module, name = path.split(":")
    cls = getattr(importlib.import_module(module), name)
    assert issubclass(cls, branch) and issubclass(cls, builtin) and issubclass(cls, NarrationError)


def test_a_configuration_fault_is_an_infrastructure_fault_and_never_an_item_fault():
    assert issubclass(ConfigurationFault, InfrastructureFault) and not issubclass(ConfigurationFault, ItemFault)


def test_the_worker_says_retryable_for_all_but_configuration_faults():
    from narration.align import UnknownAlignerError
    from narration.align.base import AlignmentError
    from narration.cli import _retryable
    from narration.devices import DeviceError
    from narration.storage import StorageRefused, StorageUnreachable
    from narration.subtitles import UnknownProfileError

    assert [_retryable(exc) for exc in (StorageUnreachable("down"), DeviceError("no CUDA"), AlignmentError("x"),
                                        RuntimeError("a crash"))] == [True, True, True, True]
    assert [_retryable(exc) for exc in (StorageRefused("denied", "AccessDenied"), UnknownAlignerError("guesswork"),
                                        UnknownProfileError("nope"))] == [False, False, False]
