"""``torch.func.functional_call`` that leaves a module whose submodules are shared as it found it.

A module used at two places (``self.blocks[1] = self.blocks[0]``: ALBERT-style sharing, universal transformers) is
reached by two names. torch's ``functional_call`` (``tie_weights=True``) swaps its parameters once per name and puts
them back in the same order, so the second name's "original" is the first's replacement: after a call with plain
tensors, the shared module holds those tensors instead of its ``nn.Parameter``\\ s (torch 2.13), and later reads of
the module (``get_parameter``, ``named_parameters``, a deep copy) see a different network. Here each parameter slot of
such a module is put back after the call; modules without shared submodules are called as they are.
"""

from __future__ import annotations

import weakref

from torch import nn
from torch.func import functional_call as _functional_call

_SHARED: "weakref.WeakKeyDictionary[nn.Module, bool]" = weakref.WeakKeyDictionary()


def _slots(module: nn.Module) -> list:
    """(submodule, name, parameter) of every parameter, as it is now, when some submodule is reached by two names;
    else [] (whether the module shares a submodule is looked up once; the parameters are read at every call)."""
    shared = _SHARED.get(module)
    if shared is None:
        shared = sum(1 for _ in module.named_modules(remove_duplicate=False)) != sum(1 for _ in module.modules())
        _SHARED[module] = shared
    if not shared:
        return []
    return [(m, n, p) for m in module.modules() for n, p in m._parameters.items() if p is not None]


def functional_call(module: nn.Module, parameter_and_buffer_dicts, args=None, kwargs=None, **options):
    """:func:`torch.func.functional_call`, the module's own parameters in place again afterwards (see above)."""
    slots = _slots(module)
    try:
        return _functional_call(module, parameter_and_buffer_dicts, args, kwargs, **options)
    finally:
        for owner, name, param in slots:
            if owner._parameters.get(name) is not param:
                owner._parameters[name] = param
