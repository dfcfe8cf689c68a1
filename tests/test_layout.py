"""Flat parameter layouts: properties that hold for all shapes."""

import torch
from hypothesis import given
from hypothesis import strategies as st

from landscape.problems import Layout

shapes = st.lists(st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple), min_size=1, max_size=5)


@given(shapes, st.integers(0, 3))
def test_flatten_unflatten_round_trip(shape_list, batch):
    layout = Layout(tuple(f"p{i}" for i in range(len(shape_list))), tuple(shape_list))
    lead = (batch,) if batch else ()
    theta = torch.randn(*lead, layout.dim)
    parts = layout.unflatten(theta)
    assert all(parts[n].shape == (*lead, *s) for n, s in zip(layout.names, layout.shapes))
    assert torch.equal(layout.flatten(parts), theta)


def test_unflatten_gives_views():
    layout = Layout(("w", "b"), ((2, 3), (2,)))
    theta = torch.zeros(layout.dim)
    layout.unflatten(theta)["b"][1] = 5.0
    assert theta[-1] == 5.0


def test_matches_parameters_to_vector():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    layout = Layout.of(dict(model.named_parameters()))
    flat = torch.nn.utils.parameters_to_vector(model.parameters())
    assert torch.equal(layout.flatten(dict(model.named_parameters())), flat)
