"""``landscape connect A.pt B.pt``: a certified low-loss path between two minima."""

from __future__ import annotations

import click
import torch

import landscape

from ._common import (FINITE, RESOLUTION, SEED, UserError, certificate_text, count, device_option, echo_json,
                      capture_lines, file_problem_option, json_option, memory_option, memory_text, parse_params,
                      quiet_option, Real)


@click.command()
@click.argument("start_file", metavar="A.pt", type=click.Path())
@click.argument("end_file", metavar="B.pt", type=click.Path())
@click.option("--method", type=click.Choice(list(landscape.METHODS)), default=landscape.DEFAULT_METHOD,
              show_default=True, help="Path method: straight segment, Dynamic String Sampling, curves, AutoNEB.")
@click.option("--level", type=FINITE, default=None,
              help="Level u the path must stay under (default: 10% above the worse endpoint loss).")
@click.option("--resolution", type=RESOLUTION, default=landscape.paths.DEFAULT_RESOLUTION, show_default=True,
              help="Sub-intervals per segment in the dense certification.")
@click.option("--certificate", type=click.Choice(list(landscape.paths.CERTIFICATES)), default="auto",
              show_default=True, help="What backs 'connected': a proof by bounds over whole segments (plain MLPs), "
                                      "the dense grid, or the proof where possible (auto).")
@click.option("--proof-seconds", type=Real(min=0, max=1e7), default=None,
              help="Seconds the proof of the method's path may spend before, if its bounds are not closing on the "
                   "level, it stops undecided and the dense check stands (default: as long as the search took, at "
                   "least 2; up to 1e7, practically no limit).")
@click.option("--shorten", is_flag=True, help="Shorten the method's path while it stays under the level (shortcuts, "
                                             "beads pulled straight), then certify the shorter one.")
@click.option("--opt", "-O", "options", multiple=True, metavar="KEY=VALUE",
              help="A method option (repeatable), value read as JSON: -O alpha=0.5 -O penalty=1.")
@click.option("--align", type=click.Choice(sorted(landscape.ALIGNERS)), default="none", show_default=True,
              help="First move B onto A by the hidden-unit permutation (and ReLU rescaling) that keeps its "
                   "function; the path then ends at the aligned B.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the method's randomness.")
@click.option("--bn", type=click.Choice(list(landscape.BN_POLICIES)), default=None,
              help="BatchNorm statistics along the path: recomputed at every point from the training data "
                   "(default for models with BatchNorm) or frozen.")
@click.option("--search-samples", type=count(1, 10**9), default=None,
              help="The method searches on a fixed random subset of N training samples; the certificate uses all.")
@click.option("--sample-chunk", type=count(1, 10**9), default=None,
              help="Evaluate the data N samples at a time (exact: chunk losses and gradients summed), bounding memory.")
@memory_option
@file_problem_option
@click.option("--float64", is_flag=True, help="Compute in double precision.")
@click.option("-o", "--out", default=None, type=click.Path(), help="Write the path here (a landscape path file).")
@quiet_option
@device_option
@json_option
def connect(start_file, end_file, method, level, resolution, certificate, proof_seconds, shorten, options, align, seed, bn,
            search_samples, sample_chunk, memory, given, float64, out, quiet, device, as_json):
    """Connect the minima in A.pt and B.pt by a path certified to stay under a loss level.

    \b
    "connected" only if the loss stays under the level: proven on every point of the path where
    the network allows (certificate "bound"), else checked densely along every segment
    (certificate "grid", with its spacing); otherwise "not_found" with the best path and its max
    loss. Prints endpoint losses, the straight segment's barrier, the method's max loss, the status,
    the normalized geodesic length (path length / distance), beads, evaluations and seconds.
    """
    problem, start, end = landscape.load_endpoints(start_file, end_file, problem=given)
    if bn is not None:
        if not hasattr(problem, "bn"):
            raise UserError(f"problem {problem.name!r} has no BatchNorm layers; --bn applies only to models with "
                            "BatchNorm")
        problem.bn = bn
    problem.sample_chunk = sample_chunk
    dev = landscape.resolve_device(device)
    dtype = torch.float64 if float64 else torch.float32
    path = landscape.connect(problem, start.to(dev, dtype), end.to(dev, dtype), method=method, level=level,
                             generator=torch.Generator().manual_seed(seed), resolution=resolution, align=align,
                             certificate=certificate, shorten=shorten, search_samples=search_samples,
                             memory=memory, progress=not quiet, proof_seconds=proof_seconds, **parse_params(options, "-O"))
    if out:
        landscape.save_path(out, problem, path, meta={"endpoints": [str(start_file), str(end_file)], "seed": seed,
                                                      "options": list(options), "align": align,
                                                      "device": str(dev),
                                                      "dtype": str(dtype)})
    report = {**path.summary(), **{k: path.info.get(k) for k in ("linear_max_loss", "linear_barrier",
                                                                  "linear_status", "bn", "alignment",
                                                                  "search_samples", "memory")},
              "problem": problem.spec, "dim": problem.dim, "files": [str(start_file), str(end_file)],
              "output": out, "device": str(dev)}
    if as_json:
        echo_json(report)
        return
    click.echo(_summary(report, problem, level is None))


def _summary(r: dict, problem, default_level: bool) -> str:
    la, lb = r["endpoint_losses"]
    connected = r["status"] == "connected"
    lines = [
        f"{problem!r}  device {r['device']}",
        f"endpoints   {r['files'][0]}: loss {la:.6g}   {r['files'][1]}: loss {lb:.6g}",
        f"level       {r['level']:.6g}" + ("  (10% above the worse endpoint)" if default_level else ""),
    ]
    if r.get("alignment"):
        a = r["alignment"]
        lines.append(f"aligned     {a['method']} matching: straight-path barrier {a['linear_barrier_before']:.6g} "
                     f"before -> {r['linear_barrier']:.6g} after (the path ends at the aligned B)")
    if r["method"] != "linear":  # the straight segment is the baseline; for --method linear it is the answer
        lines.append(f"linear      max loss {r['linear_max_loss']:.6g}   barrier {r['linear_barrier']:.6g}   "
                     f"{'connected' if r['linear_status'] == 'connected' else 'not connected'}")
    lines += [
        f"{r['method']:<11} max loss {r['max_loss']:.6g}   barrier {r['barrier']:.6g}   "
        f"{r['status'].upper() if connected else 'NOT FOUND'} at level {r['level']:.6g}",
        f"certificate {certificate_text(r)}",
        f"geodesic    normalized length {r['normalized_length']:.4f}  (length {r['length']:.4g}, "
        f"chord {r['chord']:.4g})   {r['n_beads']} beads, {r['n_points']} points",
        f"cost        {r['evaluations']:,} loss evaluations, {r['seconds']:.2f} s, resolution {r['resolution']}"
        + (f", BatchNorm {r['bn']}" if r.get("bn") else ""),
    ]
    if r.get("memory"):
        lines.append(f"memory      {memory_text(r['memory'])}")
    if r["info"].get("capture"):
        lines += capture_lines(r["info"]["capture"])
    if r["info"].get("shorten"):
        s = r["info"]["shorten"]
        lines.append(f"shortened   length {s['length_before']:.4g} -> {s['length_after']:.4g} in {s['rounds']} rounds "
                     f"({s['dropped']} beads dropped, {s['moves']} pulled)"
                     + ("" if s["kept"] else "; the shorter path failed its certificate, the path as found is kept"))
    if r["info"].get("skipped"):
        lines.append(f"note        {r['info']['skipped']}: the method was not run")
    if r["output"]:
        lines.append(f"wrote       {r['output']}")
    return "\n".join(lines)

