"""A file's claims are checked again, never believed: path files relabelled, with malformed fields or integer
points, and checkpoints forged ``converged``."""

import math

import pytest
import torch
from click.testing import CliRunner

import landscape
from landscape import LandscapeError
from landscape.paths import linear_path
from landscape.paths.files import MAX_RESOLUTION, _FIELDS, _SCALARS
from landscape_cli.cli import main


@pytest.fixture(scope="module")
def ring():
    return landscape.make_problem("ring")


@pytest.fixture(scope="module")
def files(ring, tmp_path_factory):
    """The straight segment across the ring's hill (max loss 1, not below 0.3) and the arc around it (below)."""
    folder = tmp_path_factory.mktemp("forged")
    a, b = ring.minima[0].float(), ring.minima[1].float()
    straight = landscape.certify(ring, linear_path(ring, a, b, n_points=2), 0.3)
    t = torch.linspace(0, math.pi, 9)
    pts = torch.stack([-torch.cos(t), torch.sin(t)], 1)
    arc = landscape.certify(ring, landscape.Path(pts, ring.loss(pts)), 0.3)
    assert (straight.status, arc.status) == ("not_found", "connected")
    landscape.save_path(folder / "straight.pt", ring, straight)
    landscape.save_path(folder / "arc.pt", ring, arc)
    return folder


def forge(folder, source, name, **changes):
    record = torch.load(folder / source, weights_only=True)
    record.update(changes)
    torch.save(record, folder / name)
    return folder / name


def info(*args):
    return CliRunner().invoke(main, ["info", *map(str, args)])


def test_a_path_relabelled_connected_is_refuted_on_reading(files):
    forged = forge(files, "straight.pt", "forged.pt", status="connected", certificate="bound", bound=0.00587,
                   dense_max_loss=0.0)
    path, _, _ = landscape.load_path(forged)
    assert path.status == "not_found" and path.certificate == "grid" and path.bound is None
    assert path.dense_max_loss == pytest.approx(1.0) and path.max_loss == pytest.approx(1.0)
    assert path.info["file_claim"]["status"] == "connected" and path.info["file_claim"]["bound"] == 0.00587
    assert path.info["recheck"]["agrees"] is False and path.info["recheck"]["evaluations"] > 0
    shown = info(forged)
    assert shown.exit_code == 0, shown.output
    assert "not_found at level 0.3" in shown.output and "proven" not in shown.output
    assert "the file claims connected with a proof (loss <= 0.00587 on every point): not so" in shown.output


def test_a_true_claim_is_confirmed_and_a_proof_shown_as_not_rechecked(files):
    path, _, _ = landscape.load_path(files / "arc.pt")
    assert path.status == "connected" and path.info["recheck"]["agrees"] is True
    assert path.info["recheck"]["knot_loss_change"] == 0.0
    claimed = forge(files, "arc.pt", "proof.pt", certificate="bound", bound=0.2)
    back, _, _ = landscape.load_path(claimed)
    assert back.status == "connected" and back.certificate == "grid" and back.bound is None  # what was re-run
    shown = info(claimed)
    assert shown.exit_code == 0, shown.output
    assert "certificate grid: dense check" in shown.output
    assert "the proof is claimed by the file, not re-checked" in shown.output


def test_forged_knot_losses_are_replaced_by_the_problem_s(files, ring):
    record = torch.load(files / "arc.pt", weights_only=True)
    forged = forge(files, "arc.pt", "losses.pt", losses=torch.zeros_like(record["losses"]) - 5)
    path, _, _ = landscape.load_path(forged)
    torch.testing.assert_close(path.losses, ring.loss(path.points))
    assert path.info["recheck"]["knot_loss_change"] >= 5


def test_a_refutation_stands_only_if_its_witness_is_above_the_level(files, ring):
    # a grid of one interval a segment sees only the knots (loss 0): the hill between them is the witness's
    record = torch.load(files / "straight.pt", weights_only=True)
    witness = {"segment": 0, "t": 0.5, "loss": 1.0, "decided_in": "float64"}
    true = forge(files, "straight.pt", "witness.pt", resolution=1, certificate="bound",
                 info={**record["info"], "proof": {"status": "refuted", "witness": witness}})
    path, _, _ = landscape.load_path(true)
    assert path.status == "not_found" and path.certificate == "bound" and path.dense_max_loss == pytest.approx(1.0)
    assert path.dense_argmax == pytest.approx(0.5)
    lie = forge(files, "straight.pt", "lie.pt", resolution=1, certificate="bound",
                info={**record["info"], "proof": {"status": "refuted", "witness": {**witness, "t": 0.0}}})
    path, _, _ = landscape.load_path(lie)
    assert path.status == "connected" and path.certificate == "grid"  # the knots are all the grid sees


def test_without_recheck_the_claim_is_marked_as_the_file_s(files):
    path, _, _ = landscape.load_path(files / "straight.pt", recheck=False)
    assert path.info["rechecked"] is False and "file_claim" not in path.info


def test_the_rendered_label_follows_the_recheck(files):
    from landscape.views.scene import scene_from_files

    forged = forge(files, "straight.pt", "render.pt", status="connected", certificate="bound", bound=0.00587)
    scene = scene_from_files(paths=[forged], grid=5)
    (curve,) = [c for c in scene.curves if c.kind == "path"]
    assert curve.figures["status"] == "not_found" and curve.figures["certificate"] == "grid"
    pytest.importorskip("pyvista")
    from landscape.viz._render import path_text

    text = path_text(curve)
    assert "proven" not in text and "no path found below the level" in text


BAD_FIELDS = [
    ("level", "abc", "field 'level' is 'abc', not a finite number"),
    ("level", float("nan"), "field 'level' is nan, not a finite number"),
    ("level", -math.inf, "field 'level' is -inf, not a finite number"),
    ("level", True, "field 'level' is True"),
    ("level", 10**400, "field 'level' is 1000000"),  # an int no float holds
    ("certificate", "magic", "field 'certificate' is 'magic', not 'bound' or 'grid'"),
    ("status", "proven", "field 'status' is 'proven'"),
    ("bound", math.inf, "field 'bound' is inf"),
    ("dense_max_loss", math.nan, "field 'dense_max_loss' is nan"),
    ("dense_argmax", 2.0, "field 'dense_argmax' is 2.0, not a position in [0, 1]"),
    ("resolution", MAX_RESOLUTION + 1, f"field 'resolution' is {MAX_RESOLUTION + 1}"),
    ("resolution", 2.5, "field 'resolution' is 2.5"),
    ("evaluations", -1, "field 'evaluations' is -1"),
    ("seconds", math.nan, "field 'seconds' is nan"),
    ("method", "x" * 200, "field 'method' is 'xxx"),
    ("t", "nan", "NaN or infinite"),
    ("t", "reversed", "t must rise from 0 to 1"),
    ("points", "int64", "points are int64, not float32 or float64"),
    ("losses", "int64", "losses are int64"),
    ("points", "complex", "points are complex64"),
]


def bad_value(record, field, value):
    if field == "t":
        return torch.full_like(record["t"], math.nan) if value == "nan" else record["t"].flip(0)
    if field in ("points", "losses"):
        return record[field].round().to(torch.int64 if value == "int64" else torch.complex64)
    return value


@pytest.mark.parametrize("field,value,message", BAD_FIELDS, ids=[f"{f}-{i}" for i, (f, _, _) in enumerate(BAD_FIELDS)])
def test_a_malformed_field_is_refused_in_one_line(files, field, value, message):
    record = torch.load(files / "arc.pt", weights_only=True)
    bad = forge(files, "arc.pt", "bad.pt", **{field: bad_value(record, field, value)})
    with pytest.raises(LandscapeError, match="bad.pt: .*" + message.replace("[", r"\[").replace("]", r"\]")
                       .replace("(", r"\(").replace(")", r"\)")):
        landscape.load_path(bad)
    shown = info(bad)
    assert shown.exit_code == 2 and len(shown.stderr.strip().splitlines()) == 1, shown.output


def test_a_status_with_no_level_is_refused(files):
    bad = forge(files, "arc.pt", "nolevel.pt", level=None)
    with pytest.raises(LandscapeError, match="status 'connected' without a level"):
        landscape.load_path(bad)


def test_every_claim_field_has_a_check():
    assert set(_FIELDS) == set(_SCALARS)


def test_a_checkpoint_forged_converged_is_evaluated_again(tmp_path):
    problem = landscape.make_problem("moons_mlp", width=4)
    theta = problem.init(torch.Generator().manual_seed(0))
    path = landscape.save_checkpoint(tmp_path / "m.pt", problem, theta)
    forged = forge(tmp_path, "m.pt", "forged.pt", loss=42.75, converged=True, grad_norm=0.0)
    d = landscape.describe_file(forged)
    assert d["recorded_converged"] is True and d["recorded_grad_norm"] == 0.0
    assert d["converged"] is False and d["grad_norm"] > 1e-2
    shown = info(forged, path)
    assert shown.exit_code == 0, shown.output
    assert "converged NO: not a minimum" in shown.output and "  converged yes" not in shown.output
    assert "the file claims converged yes: not so" in shown.output
    assert shown.output.count("not so") == 1  # the honest file agrees with itself
