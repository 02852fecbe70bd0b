"""Read models that were pickled under the module names of the flat layout (before 0.2).

A logged model is a cloudpickled :class:`~ml_tasks.registry.pyfunc.CandidateModel`, and a
pickle names each class by its module: a champion registered before the package layout says
``ml_tasks.calibrate.CalibratedCandidate`` or ``ml_tasks.torch_mlp.TorchMLPCandidate``. Those
modules no longer exist, and no code imports them. Only while such a model is being loaded,
:func:`legacy_module_names` lets the unpickler find each old module name as a read-only view
of the modules that hold its classes now; afterwards the old names are gone again. Names in
``ml_tasks.models`` itself need nothing: that package still exports the classes pickled there.

The map is fixed: the classes a model pickle can hold are the candidate families, the
calibrators and the pyfunc wrapper.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import threading
import types
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

#: Old module name -> the modules that now hold its picklable classes, searched in order.
LEGACY_MODULES: dict[str, tuple[str, ...]] = {
    "ml_tasks.pyfunc": ("ml_tasks.registry.pyfunc",),
    "ml_tasks.calibrate": ("ml_tasks.models.calibrators",),
    "ml_tasks.torch_mlp": ("ml_tasks.models.network",),
}

_lock = threading.RLock()


class _LegacyModule(types.ModuleType):
    """An old module name whose attributes are looked up in the modules that hold them now."""

    def __init__(self, name: str, targets: Sequence[str]) -> None:
        super().__init__(name, f"Legacy name of {', '.join(targets)} (for unpickling models only).")
        self._targets = tuple(targets)

    def __getattr__(self, attribute: str) -> Any:
        for target in self._targets:
            module = importlib.import_module(target)
            if hasattr(module, attribute):
                return getattr(module, attribute)
        raise AttributeError(f"{self.__name__}.{attribute}: not found in {', '.join(self._targets)}")


class _LegacyFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None,
                  ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in LEGACY_MODULES:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return _LegacyModule(spec.name, LEGACY_MODULES[spec.name])

    def exec_module(self, module: types.ModuleType) -> None:
        """Nothing to run: the module resolves its attributes on demand."""


@contextmanager
def legacy_module_names() -> Iterator[None]:
    """Within the block, the old flat module names import (as views of their new modules).

    Re-entrant and thread-safe; on leaving, the finder and every old name it created are removed,
    so the rest of the process sees only the current layout.
    """
    with _lock:
        finder = _LegacyFinder()
        sys.meta_path.append(finder)
        try:
            yield
        finally:
            sys.meta_path.remove(finder)
            if not any(isinstance(f, _LegacyFinder) for f in sys.meta_path):
                for name in LEGACY_MODULES:
                    if isinstance(sys.modules.get(name), _LegacyModule):
                        del sys.modules[name]
                    parent, _, child = name.rpartition(".")
                    if isinstance(getattr(sys.modules.get(parent), child, None), _LegacyModule):
                        delattr(sys.modules[parent], child)  # the import system set it on the package
