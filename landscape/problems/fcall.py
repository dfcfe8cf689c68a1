"""``torch.func.functional_call`` that leaves a module whose submodules are shared as it found it.

A module used at two places (``self.blocks[1] = self.blocks[0]``: ALBERT-style sharing, universal transformers) is
reached by two names. torch's ``functional_call`` (``tie_weights=True``) swaps its parameters once per name and puts
them back in the same order, so the second name's "original" is the first's replacement: after a call with plain
tensors, the shared module holds those tensors instead of its ``nn.Parameter``\\ s (torch 2.13), and later reads of
the module (``get_parameter``, ``named_parameters``, a deep copy) see a different network. Here each parameter slot of
such a module is put back after the call; modules without shared submodules are called as they are.

A module may also keep a tensor as a plain attribute that its forward recomputes from its parameters (the hook-style
``torch.nn.utils.weight_norm`` and ``spectral_norm`` set ``module.weight`` in a pre-hook): under ``vmap`` the call left
a batched tensor there, which no later deep copy or plain call could read. Such attributes are put back too, detached
(torch cannot deep-copy a tensor computed with a gradient; the pre-hook computes it again at the next call).
"""

from __future__ import annotations

import weakref

import torch
from torch import nn
from torch.func import functional_call as _functional_call

_SHARED: "weakref.WeakKeyDictionary[nn.Module, bool]" = weakref.WeakKeyDictionary()
_ATTRIBUTES: "weakref.WeakKeyDictionary[nn.Module, list]" = weakref.WeakKeyDictionary()


def _attributes(module: nn.Module) -> list:
    """(submodule, name, value) of the tensors kept as plain attributes of the module's submodules, as they are now
    (which attributes hold tensors is looked up once)."""
    names = _ATTRIBUTES.get(module)
    if names is None:
        names = [(m, n) for m in module.modules() for n, v in vars(m).items() if isinstance(v, torch.Tensor)]
        _ATTRIBUTES[module] = names
    return [(m, n, vars(m).get(n)) for m, n in names]


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
    slots, attributes = _slots(module), _attributes(module)
    try:
        return _functional_call(module, parameter_and_buffer_dicts, args, kwargs, **options)
    finally:
        for owner, name, param in slots:
            if owner._parameters.get(name) is not param:
                owner._parameters[name] = param
        for owner, name, value in attributes:  # detached: forward recomputes it, and a copy can then be made
            if vars(owner).get(name) is not value or (value is not None and value.grad_fn is not None):
                setattr(owner, name, value if value is None or value.grad_fn is None else value.detach())
