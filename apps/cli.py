"""``landscape``: the command line. Each command parses, calls one library function, writes, prints."""

from __future__ import annotations

import click
import torch

import landscape
from landscape.bench import (BenchRows, dss_round_speed, evaluator_throughput, label, matmul_peak, plane_speed,
                             real_cnn, real_size, transformer_speed, conv_speed)
from landscape.minima import POLISH_STEPS, criterion_text, train_checkpoints

from ._index import CONTEXT, HELP, store_problems
from ._common import (FINITE, POSITIVE, Group, Real, UserError, build_problem, certificate_text, claim_text,
                      count, device_option, echo_json, echo_raw_names, json_text, file_problem_option, json_option,
                      memory_option, memory_text, parse_seeds, problem_options, quiet_option, split_problem,
                      table)


@click.group(cls=Group, help=HELP, context_settings=CONTEXT)
@click.version_option(landscape.__version__, "--version", "-V", prog_name="landscape")
def main():
    echo_raw_names()


@main.command()
@json_option
def problems(as_json):
    """List the embedded problems and their parameters."""
    rows = [landscape.problems.describe_problem(name) for name in landscape.PROBLEMS]
    for row in rows:
        row["dim"] = landscape.make_problem(row["name"]).dim
    lines = []
    for row in rows:
        params = ", ".join(f"{k}={v}" for k, v in row["params"].items()) or "-"
        lines.append(f"{row['name']}  (D={row['dim']})\n    {row['doc']}\n    params: {params}")
    lines.append("\nUser problems: pass package.module:factory where a problem name is asked for.")
    outputs = {"text": "\n".join(lines), "json": json_text(rows)}
    store_problems(outputs)  # the next `landscape problems` answers from it, without torch
    click.echo(outputs["json" if as_json else "text"])


@main.command()
@click.argument("problem", default=landscape.DEFAULT_PROBLEM, required=False)
@problem_options
@click.option("--seeds", default="0", show_default=True, help="Seeds to train: 0..9, 0,3,7 or 5.")
@click.option("-o", "--out", "out_dir", default="minima", show_default=True, type=click.Path(),
              help="Folder for the checkpoints (one file per seed).")
@click.option("--optimizer", type=click.Choice(list(landscape.OPTIMIZERS)), default="adam", show_default=True)
@click.option("--lr", type=POSITIVE, default=None, help="Learning rate [default: 1e-3; 1e-2 for networks with "
                                                          "BatchNorm; 3e-3 for modadd_transformer].")
@click.option("--momentum", type=Real(0, 1, max_open=True), default=0.0, show_default=True,
              help="Heavy-ball momentum (gd).")
@click.option("--steps", type=count(1), default=2000, show_default=True, help="Maximum optimiser steps.")
@click.option("--until-loss", type=FINITE, default=None, help="Stop each seed once its training loss is <= L0.")
@click.option("--batch-size", type=count(1), default=None, help="Minibatch size (default: full batch).")
@click.option("--record-every", type=count(1), default=10, show_default=True, help="Trajectory record interval.")
@click.option("--max-records", type=count(2, 10**6), default=100, show_default=True, help="Trajectory size bound.")
@click.option("--polish-steps", type=count(0), default=POLISH_STEPS, show_default=True,
              help="Without --until-loss: descent steps at most to bring seeds to |grad L| <= 1e-3*max(|L|, 0.1).")
@click.option("--decoupled-decay", type=Real(0, 1e3), default=0.0, show_default=True,
              help="The optimiser's own (AdamW) weight decay: each step also moves theta by -lr*W*theta. The loss "
                   "- and so what is a minimum - is unchanged: the polish and the check use the loss.")
@click.option("--no-trajectory", is_flag=True, help="Do not store the trajectory in the checkpoints.")
@click.option("--float64", is_flag=True, help="Train in double precision.")
@click.option("--overwrite", is_flag=True, help="Retrain seeds whose checkpoints already exist.")
@quiet_option
@device_option
@json_option
def train(problem, width, params, seeds, out_dir, optimizer, lr, momentum, steps, until_loss, batch_size,
          record_every, max_records, polish_steps, decoupled_decay, no_trajectory, float64, overwrite, quiet, device,
          as_json):
    """Train minima of PROBLEM (default: digits_mlp), all seeds batched, one checkpoint per seed.

    Without --until-loss the seeds are minima: after the optimiser's steps, seeds short of the
    stationarity criterion |grad L| <= 1e-3*max(|L|, 0.1) are polished; "converged" says which meet it.
    Seeds whose checkpoint already exists with the same options are kept: an interrupted run resumes.
    Networks with BatchNorm train in training mode (batch statistics, one pass) and are polished and
    checked on their recomputed loss; each file records BatchNorm's running statistics at its minimum
    (so --bn frozen is the trained network). Trajectories beyond 16 MiB are stored subsampled.
    """
    prob = build_problem(problem, width, params)
    rows = train_checkpoints(
        prob, parse_seeds(seeds), out_dir, overwrite=overwrite, trajectory=not no_trajectory, optimizer=optimizer,
        lr=lr, momentum=momentum, steps=steps, until_loss=until_loss, batch_size=batch_size,
        record_every=record_every, max_records=max_records, polish_steps=polish_steps,
        decoupled_decay=decoupled_decay,
        device=landscape.resolve_device(device),
        dtype=torch.float64 if float64 else torch.float32, progress=not quiet)
    if as_json:
        echo_json(rows)
        return
    click.echo(f"{prob!r}")
    target = [] if until_loss is None else [f"loss <= {until_loss:g}"]
    click.echo(table([[r["file"], r["seed"], f"{r['loss']:.6g}", f"{r['grad_norm']:.3g}", _yes(r["converged"]),
                       *([_yes(r["reached_target"])] if target else []), r["steps"], r["polish_steps"], r["status"]]
                      for r in rows],
                     ["file", "seed", "loss", "|grad L|", "converged", *target, "steps", "polish", "status"]))
    bn = [r for r in rows if r.get("batchnorm_losses")]
    if bn:
        gap = max(abs(r["batchnorm_losses"]["train_mode"] - r["batchnorm_losses"]["recompute"]) for r in bn)
        click.echo("BatchNorm: each file holds the running statistics of the training split at its minimum, so "
                   "--bn frozen evaluates the trained network (frozen loss = loss above); a training-mode forward "
                   f"(batch statistics, biased variance) differs by at most {gap:.2g}")
    missed = [r["seed"] for r in rows if r["reached_target"] is False]
    if missed:
        click.echo(f"landscape: warning: seeds {missed} did not reach --until-loss {until_loss} in {steps} steps; "
                   "raise --steps or --lr", err=True)
    if until_loss is None and not all(r["converged"] for r in rows):
        bad = [r["seed"] for r in rows if not r["converged"]]
        click.echo(f"landscape: warning: seeds {bad} are not minima ({criterion_text()} fails); "
                   "raise --polish-steps or --steps (losses without a finite minimum never meet it)", err=True)


def _yes(flag) -> str:
    return "-" if flag is None else "yes" if flag else "NO"


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path())
@file_problem_option
@json_option
def info(files, given, as_json):
    """Describe landscape files: minima (problem, D, losses re-evaluated, norms, trajectory) and paths."""
    out = [landscape.describe_file(f, problem=given) for f in files]
    if as_json:
        echo_json(out if len(out) > 1 else out[0])
        return
    for d in out:
        click.echo(_DESCRIBE[d["kind"]](d))


def _describe_minimum(d: dict) -> str:
    losses = "  ".join(f"{k} {v:.6g}" for k, v in d["losses"].items())
    if d.get("source") == "state_dict":
        lines = [f"{d['file']}: a plain state_dict of {d['problem']['name']} D={d['dim']} "
                 "(no seed, loss or convergence recorded: evaluated here)",
                 f"    {losses}  |  |theta| {d['norm']:.4g}", "    " + _stationarity(d)]
    else:
        lines = [f"{d['file']}: {d['problem']['name']} D={d['dim']} seed={d['seed']}",
                 f"    recorded loss {d['recorded_loss']:.6g}  |  {losses}  |  |theta| {d['norm']:.4g}",
                 "    " + _stationarity(d)]
    if "trajectory_points" in d:
        thin = d.get("meta", {}).get("trajectory_thinned")
        kept = f" (evenly spaced, {thin['recorded']} recorded)" if isinstance(thin, dict) and "recorded" in thin else ""
        lines.append(f"    trajectory: {d['trajectory_points']} points over {d['trajectory_steps']} steps{kept}")
    return "\n".join(lines)


def _stationarity(d: dict) -> str:
    """The gradient norm evaluated here and whether it makes the point a minimum, beside what the file claims."""
    verdict = "yes" if d["converged"] else "NO: not a minimum"
    text = f"|grad L| {d['grad_norm']:.3g} (re-evaluated)  converged {verdict} ({criterion_text()})"
    claimed = d.get("recorded_converged")
    if d.get("source") == "state_dict":
        return text
    if claimed is None:
        return text + "; the file records no convergence"
    if claimed != d["converged"]:
        return text + f"; the file claims converged {'yes' if claimed else 'NO'}: not so"
    return text


def _describe_path(d: dict) -> str:
    level = "no level" if d["level"] is None else f"level {d['level']:.6g}"
    ends = d["meta"].get("endpoints")
    lines = [f"{d['file']}: path of {d['problem']['name']} D={d['dim']}, method {d['method']}, "
             f"{d['status']} at {level}",
             f"    max loss {d['max_loss']:.6g}  barrier {d['barrier']:.6g}  normalized length "
             f"{d['normalized_length']:.4f}  {d['n_beads']} beads  {d['evaluations']:,} evaluations"]
    lines.append(f"    certificate {certificate_text(d)}")
    claim = claim_text(d)
    if claim:
        lines.append(f"    file's claim: {claim}")
    if "linear_max_loss" in d["info"]:
        lines.append(f"    straight segment: max loss {d['info']['linear_max_loss']:.6g}")
    if ends:
        lines.append(f"    endpoints: {', '.join(ends)}")
    return "\n".join(lines)


#: How ``landscape info`` prints each kind of file (the kinds of ``landscape.describe_file``).
_DESCRIBE = {"minimum": _describe_minimum, "path": _describe_path}


@main.command()
@click.option("-k", "--points", "k", type=count(1, 1 << 20), default=None,
              help="Points per batched call (default 64; 4 with --real).")
@click.option("--seconds", type=Real(0, 3600, min_open=True), default=0.5, show_default=True,
              help="Minimum timing per figure.")
@click.option("--problem", "extra", multiple=True, metavar="NAME[:k=v,...]",
              help="Add a problem to the table, e.g. digits_mlp:width=256 or a user problem "
                   "package.module:factory (repeatable).")
@click.option("--beads", type=count(1, 4096), default=16, show_default=True, help="Beads of the path-refinement round.")
@click.option("--bead-steps", type=count(1, 10**5), default=20, show_default=True, help="Descent steps of each bead.")
@click.option("--real", is_flag=True, help="Instead: a CNN of ~1M parameters on 5,000 images (digits upscaled): "
                                          "batched vs a plain nn.Module loop, peak memory, one connect.")
@click.option("--real-images", type=count(16, 5391), default=5000, show_default=True, help="Images of --real.")
@memory_option
@click.option("--quiet", "-q", is_flag=True, help="No progress line on stderr naming the row being measured.")
@device_option
@json_option
def bench(k, seconds, extra, beads, bead_steps, real, real_images, memory, quiet, device, as_json):
    """Throughput of the batched evaluator: K points batched vs a loop vs the torch.mm peak;
    and one path-refinement (DSS) round, its beads batched vs one at a time."""
    dev = landscape.resolve_device(device)
    if real:
        with BenchRows(not quiet, 1) as shown:
            shown(f"a CNN of ~1M parameters on {real_images} images: batched vs nn.Module loop, one connect")
            r = real_size(real_cnn(real_images), 4 if k is None else k, device=dev, memory=memory)
        _bench_real(r, dev, as_json)
        return
    k = 64 if k is None else k
    cases = [("quadratic_regression", {}), ("digits_mlp", {}), ("digits_mlp", {"width": 512})]
    cases += [split_problem(item) for item in extra]
    problems = [landscape.make_problem(name, **kw) for name, kw in cases]
    for name, problem in zip((c[0] for c in cases), problems):
        if not hasattr(problem, "flops_per_point"):
            raise UserError(f"bench measures network problems; {name} is analytic")
    plane_cases = (("quadratic_regression", {"n_train": 10000}), ("digits_mlp", {}))
    with BenchRows(not quiet, 1 + len(cases) + 2 + len(plane_cases) + 2) as shown:
        shown("torch.mm 2048x2048 peak")
        peak = matmul_peak(device=dev, min_seconds=seconds)
        rows = []
        for problem in problems:
            shown(f"{label(problem)} K={k} batched loss+grad")
            rows.append(evaluator_throughput(problem, k, device=dev, min_seconds=seconds))
        rounds = []
        for name, kw in cases[:2]:
            problem = landscape.make_problem(name, **kw)
            shown(f"{label(problem)} one DSS round of {beads} beads")
            rounds.append(dss_round_speed(problem, beads, steps=bead_steps, device=dev, min_seconds=seconds))
        planes = []
        for name, kw in plane_cases:
            problem = landscape.make_problem(name, **kw)
            shown(f"{label(problem)} 51x51 plane")
            planes.append(plane_speed(problem, device=dev, min_seconds=seconds))
        shown("modadd_transformer K=1, 16, 64: batched vs module loop vs torch.func")
        attn = transformer_speed(device=dev, min_seconds=seconds)
        conv_ks = sorted({1, min(16, k), k})
        shown(f"digits_cnn K={', '.join(map(str, conv_ks))}: batched vs module loop vs torch.func, BatchNorm "
              "recomputed and frozen")
        conv = conv_speed(ks=conv_ks, device=dev, min_seconds=seconds)
    if as_json:
        echo_json({"device": str(dev), "threads": torch.get_num_threads(), "mm_gflops": peak, "evaluator": rows,
                   "path_refinement": rounds, "planes": planes, "transformer": attn, "conv": conv})
        return
    click.echo(f"device {dev}, {torch.get_num_threads()} threads; torch.mm 2048x2048: {peak:.1f} GFLOP/s")
    click.echo("loss+gradient of K points (GFLOP/s counts forward + backward as 3x forward):")
    click.echo(table([[r["label"], r["k"], r["chunk"], f"{r['batched_points_per_s']:.0f}",
                       f"{r['loop_points_per_s']:.0f}",
                       "-" if r["plain_points_per_s"] is None else f"{r['plain_points_per_s']:.0f}",
                       f"{r['batched_gflops']:.1f}", f"{r['loop_gflops']:.1f}", f"{r['speedup']:.2f}x"] for r in rows],
                     ["problem", "K", "chunk", "batched pts/s", "loop pts/s", "nn.Module pts/s", "batched GF/s",
                      "loop GF/s", "speedup"]))
    click.echo("a point's loss+gradient, wall / CPU microseconds: the batched call at K points, and one forward and "
               "backward pass of the problem's nn.Module:")
    ks = sorted({s["k"] for r in rows for s in r["scaling"]})
    click.echo(table([[r["label"], *[next((f"{s['us']:.0f} / {s['cpu_us']:.0f}" for s in r["scaling"] if s["k"] == m),
                                            "-") for m in ks],
                       "-" if r["plain_us"] is None else f"{r['plain_us']:.0f} / {r['plain_cpu_us']:.0f}"] for r in rows],
                     ["problem", *[f"K={m}" for m in ks], "nn.Module"]))
    click.echo("a 51x51 filter-normalized plane (landscape.evaluate_plane) against the nn.Module run forward once a point "
               "(seconds, wall / CPU):")
    click.echo(table([[r["label"], r["points"], f"{r['wall_s']:.3f} / {r['cpu_s']:.3f}",
                       "-" if r["module_wall_s"] is None else f"{r['module_wall_s']:.3f} / {r['module_cpu_s']:.3f}",
                       "-" if r["module_cpu_s"] is None else f"{r['module_cpu_s'] / r['cpu_s']:.2f}x"] for r in planes],
                     ["problem", "points", "plane s", "nn.Module s", "speedup (CPU)"]))
    click.echo(f"one DSS round: {beads} beads x {bead_steps} descent steps, then every segment checked densely:")
    click.echo(table([[r["label"], r["beads"], r["evaluations"], f"{r['batched_s']:.3f}",
                       f"{r['bead_by_bead_s']:.3f}", f"{r['speedup']:.2f}x"] for r in rounds],
                     ["problem", "beads", "evaluations", "batched s", "bead-by-bead s", "speedup"]))
    ways = ("batched", "module loop", "torch.func")
    click.echo(f"loss+gradient of K transformers, {attn['label']}, {attn['samples']} pairs "
               "(wall / CPU microseconds a point):")
    click.echo(table([[r["k"], *[f"{r[w]['us']:.0f} / {r[w]['cpu_us']:.0f}" for w in ways], r["fastest"]]
                      for r in attn["rows"]], ["K", *ways, "fastest"]))
    click.echo(f"loss+gradient of K conv nets, {conv['label']}, {conv['samples']} images, {conv['evaluator']} evaluator "
               "(wall / CPU microseconds a point, the ways in turn, best of 3 rounds; the loop runs the module in "
               "training mode for recomputed statistics, "
               f"evaluation mode for frozen; useful GFLOP/s = 3 x forward FLOPs per CPU second, torch.mm "
               f"{conv['mm_gflops']:.1f}):")
    click.echo(table([[r["bn"], r["k"], *[f"{r[w]['us']:.0f} / {r[w]['cpu_us']:.0f}" for w in ways], r["fastest"],
                       f"{r['gflops']:.1f} ({100 * r['of_peak']:.0f}% of mm)"] for r in conv["rows"]],
                     ["BatchNorm", "K", *ways, "fastest", "batched useful GF/s"]))


def _bench_real(r, dev, as_json):
    if as_json:
        echo_json({**r, "threads": torch.get_num_threads()})
        return
    c = r["connect"]
    click.echo(f"{r['problem']}: D={r['dim']:,}, {r['samples']:,} images 1x16x16; device {r['device']}, "
               f"{torch.get_num_threads()} threads")
    peak = "peak allocated" if dev.type == "cuda" else "process peak RSS"
    click.echo(table([["batched (landscape)", r["k"], f"{r['batched_points_per_s']:.3f}",
                       f"{r['batched_peak_bytes'] / 2**20:,.0f}"],
                      ["loop (nn.Module)", r["k"], f"{r['loop_points_per_s']:.3f}", f"{r['loop_peak_bytes'] / 2**20:,.0f}"]],
                     ["loss+gradient", "K", "points/s", f"{peak} MiB"]) + f"\nspeedup {r['speedup']:.2f}x")
    click.echo(f"connect --method linear --resolution {c['resolution']} --certificate grid (two random points): {c['status']}, "
               f"{c['evaluations']} evaluations, {c['seconds']:.1f} s; {memory_text(c['memory'])}")


# ------------------------------------------------------------------ commands of other modules
# Each lives in its own module of apps/ and is registered here, one line each.
from .align import align  # noqa: E402

main.add_command(align)
from .study import study  # noqa: E402

main.add_command(study)
from .chart import chart  # noqa: E402
from .render import render  # noqa: E402

main.add_command(render)
main.add_command(chart)
from .connect import connect  # noqa: E402

main.add_command(connect)
from .valleys import valleys  # noqa: E402
from .explore import explore  # noqa: E402

main.add_command(valleys)
main.add_command(explore)


if __name__ == "__main__":  # pragma: no cover
    main()
