"""Every registry and closed choice is one ``Registry``: one lookup, one option check, one message.

The registries are found by walking the package (a new one is tested without being listed here).
For each: an unknown name fails naming the kind and listing every valid name; an unknown option of
each entry fails listing the options that entry takes; keys equal function names. A second table
checks that the public functions go through their registry: a bad name or option given to
``connect``, ``make_problem``, ``make_plane``, ... fails with exactly the registry's message.
"""

import importlib
import inspect
import pkgutil
import re

import pytest
import torch

import landscape
from landscape import LandscapeError
from landscape._registry import Registry


def _registries() -> dict[str, Registry]:
    found = {}  # id -> (where it is first found, the registry): a registry imported elsewhere counts once
    for info in pkgutil.walk_packages(landscape.__path__, "landscape."):
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if isinstance(value, Registry):
                found.setdefault(id(value), (f"{info.name}.{name}", value))
    return dict(found.values())


REGISTRIES = _registries()


def test_the_walk_finds_the_registries_of_the_layout():
    names = {key.rpartition(".")[2] for key in REGISTRIES}
    assert {"METHODS", "PROBLEMS", "PLANES", "SCENE_PLANES", "ALIGNERS", "TASKS", "LOSSES", "OPTIMIZERS",
            "DYNAMICS", "BN_POLICIES", "ACTIVATIONS", "NORMALIZATIONS", "BIASES", "INSERTS", "PROTOCOLS",
            "LEVEL_SCALES", "STATUSES", "REPORT_FORMATS", "DEVICES", "PATH_AXES", "VIEWS", "PATH_COLORINGS",
            "FORMATS"} <= names
    for exported in ("METHODS", "PROBLEMS", "PLANES", "ALIGNERS", "TASKS", "LOSSES", "OPTIMIZERS", "DYNAMICS",
                     "BN_POLICIES"):
        assert isinstance(getattr(landscape, exported), Registry), exported


@pytest.mark.parametrize("key", sorted(REGISTRIES))
def test_an_unknown_name_names_the_kind_and_lists_the_valid_names(key):
    registry = REGISTRIES[key]
    assert registry, f"{key} is empty"
    with pytest.raises(LandscapeError) as err:
        registry.lookup("no_such_thing")
    message = str(err.value)
    assert message.startswith(f"unknown {registry.kind} 'no_such_thing'; choose one of {sorted(registry)}")
    with pytest.raises(LandscapeError, match=re.escape(f"study.toml: unknown {registry.kind} 'x'")):
        registry.lookup("x", where="study.toml")
    for name in registry:
        assert registry.lookup(name) is registry[name]


@pytest.mark.parametrize("key", sorted(REGISTRIES))
def test_an_unknown_option_is_refused_listing_the_accepted_ones(key):
    registry = REGISTRIES[key]
    for name in registry:
        accepted = registry.options(name)
        assert registry.check_options(name, list(accepted)) == accepted
        with pytest.raises(LandscapeError) as err:
            registry.check_options(name, [*accepted, "no_such_option"])
        assert str(err.value) == (f"{registry.kind} {name!r} has no {registry.word}(s) ['no_such_option']; "
                                  f"it takes {sorted(accepted)}")
        assert not set(accepted) & registry.shared
    union = registry.options()
    assert set(union) == {k for name in registry for k in registry.options(name)}
    with pytest.raises(LandscapeError, match=re.escape(f"unknown {registry.kind} {registry.word}(s) ['zz']")):
        registry.check_options(None, ["zz"])


@pytest.mark.parametrize("key", sorted(REGISTRIES))
def test_keys_equal_function_names(key):
    registry = REGISTRIES[key]
    for name, entry in registry.items():
        if inspect.isfunction(entry):
            assert entry.__name__ == name, f"{key}[{name!r}] is {entry.__name__}"
            assert entry.__doc__, f"{key}[{name!r}] has no docstring"


def test_options_come_from_signatures_without_the_shared_parameters():
    assert landscape.METHODS.options("linear") == {"n_points": 2}
    assert landscape.method_options("string") == landscape.METHODS.options("string")
    assert landscape.PROBLEMS.options("ring") == {"radius": 1.0, "bump": 0.2}
    assert set(landscape.PLANES.options("random")) == {"normalization", "biases"}
    assert landscape.PLANES.options("points") == {}
    assert landscape.ALIGNERS.options("weight") == {}  # align() passes every parameter itself
    assert landscape.TASKS.options("train_minima") == landscape.TASKS["train_minima"].defaults


# ---------------------------------------------------------------- the public functions use their registry
RING = landscape.make_problem("ring")
A, B = RING.minima[0], RING.minima[1]


def _message(registry, name, options=None):
    """What the registry says about a bad name, or about a bad option of ``name``."""
    with pytest.raises(LandscapeError) as err:
        registry.lookup(name) if options is None else registry.check_options(name, options)
    return str(err.value)


CALLS = {
    "path method": (landscape.METHODS, "spline", lambda v: landscape.connect(RING, A, B, method=v)),
    "path option": (landscape.METHODS, "string", lambda v: landscape.connect(RING, A, B, method=v, alpha_=1)),
    "alignment": (landscape.ALIGNERS, "greedy", lambda v: landscape.connect(RING, A, B, align=v)),
    "insert": (importlib.import_module("landscape.paths.string").INSERTS, "edge",
               lambda v: landscape.connect(RING, A, B, method="string", insert=v)),
    "problem": (landscape.PROBLEMS, "nope", lambda v: landscape.make_problem(v)),
    "problem parameter": (landscape.PROBLEMS, "ring", lambda v: landscape.make_problem(v, colour=1)),
    "plane": (landscape.PLANES, "diagonal", lambda v: landscape.make_plane(v, RING, RING.minima)),
    "plane option": (landscape.PLANES, "points", lambda v: landscape.make_plane(v, RING, RING.minima, spread=2)),
    "optimizer": (landscape.OPTIMIZERS, "sgd", lambda v: landscape.train(RING, [0], optimizer=v, steps=1)),
    "activation": (importlib.import_module("landscape.problems.mlp").ACTIVATIONS, "gelu",
                   lambda v: landscape.problems.mlp([2, 3, 1], activation=v)),
    "loss": (landscape.LOSSES, "hinge",
             lambda v: landscape.from_module(torch.nn.Linear(2, 1), (torch.zeros(4, 2), torch.zeros(4, 1)), loss=v)),
    "dynamics": (landscape.DYNAMICS, "adam",
                 lambda v: landscape.implicit_bias(torch.eye(2), torch.ones(2), torch.ones(1, 2), dynamics=v)),
    "task parameter": (landscape.TASKS, "train_minima",
                       lambda v: importlib.import_module("landscape.studies.tasks").task_options(v, {"stpes": 1})),
    "device": (importlib.import_module("landscape._device").DEVICES, "tpu", lambda v: landscape.resolve_device(v)),
    "path status": (landscape.paths.STATUSES, "maybe",
                    lambda v: landscape.Path(torch.zeros(2, 2), torch.zeros(2), status=v)),
}
OPTION_CALLS = {"path option": ["alpha_"], "problem parameter": ["colour"], "plane option": ["spread"],
                "task parameter": ["stpes"]}


@pytest.mark.parametrize("case", sorted(CALLS))
def test_public_functions_fail_with_their_registrys_message(case):
    registry, value, call = CALLS[case]
    expected = _message(registry, value, OPTION_CALLS.get(case))
    with pytest.raises(LandscapeError) as err:
        call(value)
    assert str(err.value).endswith(expected)
