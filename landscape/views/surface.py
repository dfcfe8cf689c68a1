"""`Surface`: the loss over a grid of a plane, evaluated as one batched sweep and cached.

The grid's points are evaluated by ``problem.loss_on_plane`` in blocks of many points (the
problem cuts each block into cache-sized chunks), so a 51×51 plane is a few dozen batched calls,
never a loop over points. The grid is even, except that it can be made to pass exactly through
given points (the minima a view draws): the line nearest each such coordinate is moved onto it, so
the drawn surface meets a minimum at its own loss instead of missing it by up to half a cell. A finished surface is stored under a SHA-256 of everything that
decides its values (problem spec, the plane's exact bytes, grid, span, split, dtype): a cache
file is reused only for the very same inputs, never for stale ones.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path as FilePath

import torch

from .._errors import LandscapeError
from .._progress import redraw_interval
from .planes import Plane
from ..problems.problem import Problem

#: Version of the cached surface record; bump when what a key covers changes.
CACHE_VERSION = 2
#: Bytes of parameter vectors one block of the sweep may build (the problem chunks it further).
BLOCK_BYTES = 256 << 20


@dataclass
class Surface:
    """Losses over a rectangular grid of a plane.

    Attributes
    ----------
    plane : Plane
    a : Tensor, shape (A,), float64
        Coordinates along ``plane.directions[0]``.
    b : Tensor, shape (B,), float64
        Coordinates along ``plane.directions[1]``.
    losses : Tensor, shape (A, B), float64
        ``losses[i, j]`` is the loss at ``plane.point([a[i], b[j]])``.
    split : str
    problem : dict
        The problem's spec.
    key : str
        The content hash the surface is cached under.
    seconds : float
        Time of the evaluation (of the original one when read from the cache).
    cached : bool
        Whether it was read from the cache.
    info : dict
        ``points_per_s``, ``device``, ``dtype``, ``nonfinite`` (count of NaN/inf losses).
    """

    plane: Plane
    a: torch.Tensor
    b: torch.Tensor
    losses: torch.Tensor
    split: str = "train"
    problem: dict = field(default_factory=dict)
    key: str = ""
    seconds: float = 0.0
    cached: bool = False
    info: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.a.shape[0]), int(self.b.shape[0]))

    def coords(self) -> torch.Tensor:
        """Plane coordinates of every grid point, shape (A, B, 2)."""
        aa, bb = torch.meshgrid(self.a, self.b, indexing="ij")
        return torch.stack([aa, bb], -1)

    def summary(self) -> dict:
        finite = self.losses[torch.isfinite(self.losses)]
        return {"grid": list(self.shape), "span": [[float(self.a[0]), float(self.a[-1])],
                                                   [float(self.b[0]), float(self.b[-1])]],
                "split": self.split, "min_loss": float(finite.min()) if finite.numel() else None,
                "max_loss": float(finite.max()) if finite.numel() else None, "seconds": self.seconds,
                "cached": self.cached, "key": self.key, **self.info}


def default_cache_dir() -> FilePath:
    """Where surfaces are cached unless told otherwise: ``$LANDSCAPE_CACHE``, else
    ``$XDG_CACHE_HOME/landscape/surfaces`` (``~/.cache/landscape/surfaces``)."""
    if os.environ.get("LANDSCAPE_CACHE"):
        return FilePath(os.environ["LANDSCAPE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return FilePath(base) / "landscape" / "surfaces"


#: Most grid points along one side of a plane.
MAX_GRID = 2049


def parse_grid(grid) -> tuple[int, int]:
    """``51``, ``(51, 41)`` or ``"51x41"`` -> ``(51, 41)``."""
    if isinstance(grid, str):
        parts = grid.lower().replace("×", "x").split("x")
        try:
            grid = tuple(int(p) for p in parts) if len(parts) == 2 else int(parts[0])
        except ValueError:
            raise LandscapeError(f"grid {grid!r}: write it as AxB, e.g. 51x51") from None
    if isinstance(grid, int):
        grid = (grid, grid)
    grid = tuple(int(g) for g in grid)
    if len(grid) != 2 or min(grid) < 2:
        raise LandscapeError(f"grid {grid!r}: needs two sizes of at least 2, e.g. 51x51")
    if max(grid) > MAX_GRID:
        raise LandscapeError(f"grid {grid[0]}x{grid[1]}: at most {MAX_GRID} points a side (a {MAX_GRID}² plane is "
                             f"{MAX_GRID * MAX_GRID:,} loss evaluations)")
    return grid


def surface_key(problem: Problem, plane: Plane, grid, span, split: str, dtype: torch.dtype, lines=None) -> str:
    """SHA-256 of everything that decides a surface's values (``lines``: the grid's coordinates, (a, b))."""
    header = {"version": CACHE_VERSION, "problem": problem.spec, "grid": list(grid),
              "span": [[float(v) for v in s] for s in span], "split": split, "dtype": str(dtype),
              "dim": problem.dim}
    h = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    h.update(plane.fingerprint().encode())
    for line in lines or ():
        h.update(line.to(torch.float64).numpy().tobytes())
    return h.hexdigest()


#: Least spacing of two grid lines after one is moved onto a point, as a fraction of the even spacing:
#: no cell becomes a sliver (a quad 4× longer than wide at worst).
MIN_GAP = 0.25


def grid_lines(lo: float, hi: float, n: int, through=()) -> tuple[torch.Tensor, list[int]]:
    """``n`` coordinates from ``lo`` to ``hi``, evenly spaced but for the lines moved onto ``through``.

    For each value of ``through`` inside (lo, hi), the nearest interior line not already moved is put
    exactly on it, unless that would bring two lines closer than ``MIN_GAP`` of the even spacing (two
    values closer than that share no line; a value that is one already keeps it).

    Returns
    -------
    coords : Tensor, shape (n,), float64
    moved : list of int
        Indices of the lines that lie on a value of ``through``.
    """
    x = torch.linspace(lo, hi, n, dtype=torch.float64)
    h = (hi - lo) / (n - 1)
    on = set()
    for t in sorted({float(v) for v in through}):
        if not lo <= t <= hi:
            continue
        k = int((x - t).abs().argmin())
        if abs(float(x[k]) - t) <= 1e-12 * max(abs(t), h):  # already on it (up to the rounding of linspace)
            if 0 < k < n - 1 and k not in on:
                x[k] = t
            on.add(k)
            continue
        if k in on or k in (0, n - 1):  # taken: the line on the other side of t, if free
            k = k + 1 if t > float(x[k]) else k - 1
            if k in on or not 0 < k < n - 1:
                continue
        if t - float(x[k - 1]) >= MIN_GAP * h and float(x[k + 1]) - t >= MIN_GAP * h:
            x[k] = t
            on.add(k)
    return x, sorted(on)


def evaluate_plane(problem: Problem, plane: Plane, *, grid=(51, 51), span=((-1.0, 1.0), (-1.0, 1.0)),
                   split: str = "train", device="cpu", dtype: torch.dtype = torch.float32, cache=None,
                   progress: bool = False, through=()) -> Surface:
    """The loss over an A×B grid of a plane, as one batched sweep.

    Parameters
    ----------
    problem : Problem
    plane : Plane
        In the problem's parameter space (``plane.dim == problem.dim``).
    grid : int, (int, int) or str
        Grid points along each direction, e.g. ``(51, 51)`` or ``"101x51"``.
    span : ((float, float), (float, float))
        Coordinate ranges along the two directions, ends included.
    split : str
        Data split the loss is computed on.
    device, dtype
        Where and in what precision the loss is computed.
    cache : str or path, optional
        Folder of cached surfaces. A surface is read from it when one with the same key exists,
        and written to it (atomically) otherwise.
    progress : bool
        A tqdm bar on stderr.
    through : sequence of (float, float)
        Plane coordinates the grid should pass through exactly (see :func:`grid_lines`); those it
        does pass through are listed in ``info["through"]``.

    Returns
    -------
    Surface
    """
    if plane.dim != problem.dim:
        raise LandscapeError(f"the plane lives in D = {plane.dim} but problem {problem.name!r} has D = {problem.dim}")
    grid = parse_grid(grid)
    span = _check_span(span)
    if problem.splits and split not in problem.splits:
        raise LandscapeError(f"problem {problem.name!r} has no data split {split!r}; it has {list(problem.splits)}")
    device = torch.device(device)
    through = [(float(p[0]), float(p[1])) for p in through]
    (a, on_a), (b, on_b) = (grid_lines(*span[i], grid[i], [p[i] for p in through]) for i in (0, 1))
    key = surface_key(problem, plane, grid, span, split, dtype, (a, b) if through else None)
    file = None if cache is None else FilePath(cache) / f"surface-{key[:32]}.pt"
    if file is not None and file.exists():
        found = _read_cached(file, key, plane, grid)
        if found is not None:
            return found
    aa, bb = torch.meshgrid(a, b, indexing="ij")
    coords = torch.stack([aa.reshape(-1), bb.reshape(-1)], 1)
    start = time.perf_counter()
    losses = _sweep(problem, plane, coords, split, device, dtype, progress, f"plane {grid[0]}x{grid[1]}")
    seconds = time.perf_counter() - start
    losses = losses.reshape(grid).to(torch.float64)
    info = {"points_per_s": coords.shape[0] / seconds if seconds > 0 else float("inf"), "device": str(device),
            "dtype": str(dtype), "nonfinite": int((~torch.isfinite(losses)).sum())}
    if through:  # the grid's points on them (equal, or within 1e-12 of the spacing where two coincide)
        nodes = [(int((a - x).abs().argmin()), int((b - y).abs().argmin())) for x, y in through]
        info["through"] = [[float(a[i]), float(b[j])] for i, j in dict.fromkeys(nodes) if i in on_a and j in on_b]
    surface = Surface(plane, a, b, losses, split, problem.spec, key, seconds, False, info)
    if file is not None:
        _write_cached(file, surface)
    return surface


def _sweep(problem, plane, coords, split, device, dtype, progress, desc) -> torch.Tensor:
    from tqdm import tqdm

    k = coords.shape[0]
    bytes_per_point = problem.dim * torch.finfo(dtype).bits // 8
    block = max(1, min(BLOCK_BYTES // max(bytes_per_point, 1), math.ceil(k / 50)))
    origin = plane.origin.to(device=device, dtype=dtype)
    directions = plane.directions.to(device=device, dtype=dtype)
    out = []
    with torch.no_grad(), tqdm(total=k, desc=desc, unit="pt", disable=not progress, leave=False,
                               dynamic_ncols=True, mininterval=redraw_interval()) as bar:
        for s in range(0, k, block):
            c = coords[s:s + block].to(device=device, dtype=dtype)
            out.append(problem.loss_on_plane(origin, directions, c, split=split).cpu())
            bar.update(c.shape[0])
    return torch.cat(out)


def _check_span(span):
    try:
        span = tuple((float(lo), float(hi)) for lo, hi in span)
    except (TypeError, ValueError):
        raise LandscapeError(f"span {span!r}: give ((a0, a1), (b0, b1))") from None
    if len(span) != 2 or not all(math.isfinite(v) for s in span for v in s) or any(hi <= lo for lo, hi in span):
        raise LandscapeError(f"span {span!r}: needs two finite ranges (low, high) with low < high")
    return span


def _read_cached(file, key, plane, grid):
    from ..problems.checkpoint import read_file

    try:
        obj = read_file(file)
    except LandscapeError:
        return None  # a torn or foreign file: recompute and overwrite it
    if not (isinstance(obj, dict) and obj.get("kind") == "surface" and obj.get("key") == key):
        return None
    losses, a, b, seconds, info = (obj.get(k) for k in ("losses", "a", "b", "seconds", "info"))
    tensors = (losses, a, b)
    if not (all(isinstance(t, torch.Tensor) and t.is_floating_point() for t in tensors)
            and tuple(losses.shape) == tuple(grid) and tuple(a.shape) == (grid[0],) and tuple(b.shape) == (grid[1],)
            and bool(torch.isfinite(a).all() and torch.isfinite(b).all())
            and isinstance(obj.get("split"), str) and isinstance(obj.get("problem"), dict)
            and isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and math.isfinite(seconds)
            and isinstance(info, dict)):
        return None  # a record with a malformed field: recompute and overwrite it
    return Surface(plane, a.double(), b.double(), losses.double(), obj["split"], obj["problem"], key, float(seconds),
                   True, dict(info))


def _write_cached(file, surface):
    from ..problems.checkpoint import FORMAT, atomic_save

    record = {"format": FORMAT, "version": CACHE_VERSION, "kind": "surface", "key": surface.key,
              "problem": surface.problem, "split": surface.split, "a": surface.a, "b": surface.b,
              "losses": surface.losses, "seconds": surface.seconds, "info": surface.info,
              "plane": surface.plane.describe()}
    atomic_save(record, file)
