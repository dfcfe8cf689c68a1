"""Freeman & Bruna's quadratic regression: minima trained to L0 connect at L0, and the study that measures it."""

import json

import pytest
import torch
from click.testing import CliRunner

import landscape
from landscape_cli.geodesic_quadratic import main as study

from test_paths import validate

LEVELS = (0.05, 0.025, 0.01)


@pytest.mark.slow
def test_quadratic_regression_minima_connect_below_their_level():
    problem = landscape.make_problem("quadratic_regression", n_train=200)
    beads, lengths = [], []
    for level in LEVELS:
        minima = landscape.train(problem, range(4), lr=0.005, steps=20000, until_loss=level, dtype=torch.float64)
        assert minima.reached_target.all() and (minima.losses <= level).all()
        row = []
        for i in (0, 2):
            a, b = minima.thetas[i], minima.thetas[i + 1]
            path = landscape.connect(problem, a, b, method="string", level=level,
                                     generator=torch.Generator().manual_seed(i))
            validate(problem, path, a, b, level)
            assert path.status == "connected" and path.max_loss <= level
            # the straight segment between two minima of this net leaves the level set: DSS had to bend
            assert path.info["linear_status"] == "not_found" and path.n_beads >= 1
            assert 1.0 < path.normalized_length < 2.0  # Freeman & Bruna's Fig. 3 range for this task
            row.append(path)
        beads.append(sum(p.n_beads for p in row))
        lengths.append([p.normalized_length for p in row])
    # lower levels need finer strings: more beads (Freeman & Bruna, Fig. 3, second column)
    assert beads[0] < beads[-1]


@pytest.mark.slow
def test_fixed_minima_need_longer_paths_at_lower_levels():
    # {L <= u'} is a subset of {L <= u} for u' < u: between fixed endpoints, the shortest path can only
    # grow as the level falls. The certified strings follow: every pair's normalized length grows.
    problem = landscape.make_problem("quadratic_regression", n_train=200)
    rows = landscape.geodesic_lengths(problem, LEVELS, pairs=3, train_to=0.005, lr=0.005, steps=20000)
    assert [r["connected"] for r in rows] == [3, 3, 3]
    for high, low in zip(rows[:-1], rows[1:]):
        assert all(b >= a - 0.01 for a, b in zip(high["lengths"], low["lengths"]))
        assert low["normalized_length"] > high["normalized_length"]
    assert rows[-1]["beads"] > rows[0]["beads"]


def test_study_rows_and_script():
    problem = landscape.make_problem("quadratic_regression", n_train=100)
    rows = landscape.geodesic_lengths(problem, [0.05], pairs=1, lr=0.02)
    (row,) = rows
    assert row["level"] == 0.05 and row["pairs"] == 1 and row["connected"] == 1
    assert row["normalized_length"] == pytest.approx(row["lengths"][0]) and row["normalized_length"] >= 1
    result = CliRunner().invoke(study, ["--levels", "0.05", "--pairs", "1", "--n-train", "100", "--lr", "0.02",
                                       "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["normalized_length"] == pytest.approx(row["normalized_length"])
    table = CliRunner().invoke(study, ["--levels", "0.05", "--pairs", "1", "--n-train", "100", "--lr", "0.02"])
    assert "normalized length" in table.output and "0.05" in table.output
    # method options travel apart from the minima's training options: DSS's lr is not Adam's lr of the minima
    # (and a string allowed no round of refinement is the straight segment, which leaves the level set)
    straight = CliRunner().invoke(study, ["--levels", "0.05", "--pairs", "1", "--n-train", "100", "--lr", "0.02",
                                          "-O", "lr=0.05", "-O", "max_rounds=0", "--json"])
    assert straight.exit_code == 0, straight.output
    assert json.loads(straight.stdout)[0]["connected"] == 0
    bad = CliRunner().invoke(study, ["--pairs", "0"])
    assert bad.exit_code == 2 and "Invalid value for '--pairs'" in bad.stderr
