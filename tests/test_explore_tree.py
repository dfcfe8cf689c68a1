"""The merge tree of the explorer's side panel is readable at the panel's size: every text inside the image,
none over another (the boxes matplotlib drew them in), for few and many minima, short and long names, linear
and log axes; the clickable merges are where their bars are drawn."""

import itertools

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from landscape.viz._tree_image import short_names, tree_image  # noqa: E402


def _tree(n, name, seed=0, high=1e-3):
    """``n`` minima (losses up to ``high``) and a chain of merges at random levels above them (a valid tree)."""
    rng = np.random.default_rng(seed)
    names = [name.format(i) for i in range(n)]
    losses = dict(zip(names, (rng.uniform(0, high, n) * (rng.uniform(size=n) < 0.7)).tolist()))
    merges = [(names[i], names[rng.integers(0, i)], float(rng.uniform(0.5, 120))) for i in range(1, n)]
    return losses, merges


@pytest.mark.parametrize("n, name, floor, level, high", [
    (4, "min{}.pt", None, 20.0, 1e-3),
    (6, "min{}.pt", None, 20.0, 0.4),  # valleys without a global minimum: the legend's longest rows
    (8, "hb/himmelblau_s{}.pt", None, 80.0, 1e-3),
    (8, "hb/himmelblau_s{}.pt", 1e-4, 0.003, 1e-3),
    (24, "minima/digits_mlp_w100_s{}.pt", 1e-5, 50.0, 1e-3),
    (40, "run{}_with_a_long_name.pt", None, 60.0, 1e-3),
    (2, "a_first_minimum_with_a_very_long_file_name_{}.pt", 1e-6, 1e-5, 1e-3),
])
def test_every_text_of_the_tree_is_inside_and_apart(n, name, floor, level, high):
    losses, merges = _tree(n, name, high=high)
    image = tree_image(losses, merges, level=level, log_floor=floor, title="merge tree",
                       colors={m: "#e41a1c" for m in losses})
    width, height = image.size
    assert (width, height) == (420, 480) and image.png[:8] == b"\x89PNG\r\n\x1a\n"
    texts = image.texts
    kinds = {t for t, _ in texts}
    assert any(t.startswith("merge tree:") for t in kinds) and "loss level u" in kinds  # title and axis label
    assert sum(1 for t, _ in texts if t.startswith(("valley with", "below a merge", "u = "))) >= 2  # the legend
    assert any(t.startswith("no global minimum") for t, _ in texts) or high < 0.1  # the longest rows drawn
    for text, (x0, y0, x1, y1) in texts:
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height, (text, (x0, y0, x1, y1))
    for (a, p), (b, q) in itertools.combinations(texts, 2):
        overlap = min(p[2], q[2]) - max(p[0], q[0]), min(p[3], q[3]) - max(p[1], q[1])
        assert overlap[0] <= 0.5 or overlap[1] <= 0.5, (a, p, b, q)
    leaves = [t for t, _ in texts if t in set(short_names([n.removesuffix(".pt") for n in losses])[0])]
    assert len(leaves) >= min(n, 8)  # the leaves are named, as many as fit
    for x, y, u in image.merges:  # a click on a merge bar gives its level exactly
        assert image.level_at(x, y) == u


def test_short_names_cut_what_all_share_at_a_separator():
    assert short_names(["himmelblau_s3", "himmelblau_s7"]) == (["s3", "s7"], "himmelblau_…")
    assert short_names(["run1_final", "run12_final"]) == (["run1", "run12"], "…_final")
    assert short_names(["w100_s3.x", "w100_s7.x"]) == (["s3", "s7"], "w100_….x")
    assert short_names(["seed3", "seed7"]) == (["seed3", "seed7"], "…")  # never in a word
    assert short_names(["min 1", "min 2"]) == (["1", "2"], "min …")
    assert short_names(["a_", "a_b"]) == (["a_", "a_b"], "…")  # every name keeps something
    assert short_names(["only_one"]) == (["only_one"], "…")
