"""``landscape explore``: the level-set explorer, a trame web application with a level slider.

The loss surface is evaluated once (cached as ``landscape render`` caches it) and rendered on the
server by VTK (off-screen; EGL where there is no display); the browser shows the images through
trame-vtk's remote view. The valley counts come from the valley graph that ``landscape valleys``
builds (computed at start with its defaults, or read from its ``-o`` file), so the count at any u
is the command's. Moving u re-shades the view and redraws the merge tree; nothing is evaluated.
"""

from __future__ import annotations

import asyncio
import base64
import math
import numbers
from pathlib import Path as FilePath

import torch

from .._errors import LandscapeError
from ..views.levels import STEPS, Levels
from ..views.scene import Scene
from ._level_view import LevelView, path_label, valley_color
from ._explore_page import TREE_SIZE, page_layout
from ._tree_image import tree_image


class Explorer:
    """The explorer of one scene and its valley graph: a trame server, its page and the 3-D view.

    Parameters
    ----------
    scene : Scene
        Minima (its minimum markers, in the graph's order), paths, trajectories and the surface.
    levels : Levels
    details : list of dict
        Per minimum: ``file``, ``loss``, ``grad_norm`` and, where known, ``hessian_top`` and
        ``hessian_trace``.
    level : float, optional
        The first u (by default the first merge that changes the valley count).
    log : bool
        Log-scale heights and level slider.
    server : trame Server, optional
        A server to build on (a new one by default).
    window_size : (int, int)
        Pixels of the rendered view.
    placeholder : str, optional
        The picture a page shows until the server's first frame of the view (a ``data:`` URL; by default
        a snapshot of the view as made).

    Attributes
    ----------
    server, state, ui, view (LevelView)
    """

    def __init__(self, scene: Scene, levels: Levels, details: list, *, level: float | None = None, log: bool = False,
                 server=None, window_size=(900, 680), curvature=None, placeholder: str | None = None):
        from trame.app import get_server

        self.scene, self.levels, self.details = scene, levels, details
        self._curvature, self._window_size = curvature, window_size
        merges = levels.merges()
        if level is not None:
            level = _finite(level, "level")
        if level is None:
            level = merges[0]["level"] if merges else levels.graph.global_loss
        self.view = LevelView(scene, levels, level, log=log, window_size=window_size)
        self.view.label_paths()
        self.server = server or get_server(f"landscape-explore-{id(self)}", client_type="vue3")
        self.state, ctrl = self.server.state, self.server.controller
        self.labels = [m.label for m in self.view.minima]
        self._log_scale = bool(log)
        self._origin = (level, self._log_scale)  # where each page starts (see tab)
        if placeholder is None:
            placeholder = self.view.snapshot()
        self._shown = levels.position(level, log=log)  # the slider position the server last set or was sent
        self._pending = None  # a level the slider moved to, not shown yet
        # the page's switches and slider reach the server as calls (see _layout), not as state: trame's client
        # holds its state changes back while a call is pending, which made u follow the arrow keys late
        self.state.update({"position": self._shown, "log_scale": bool(log),
                           "show_trajectories": True, "counts": "", "tree_src": "", "selected": "",
                           "minimum_colors": [""] * len(self.labels), "path_rows": [], "level_text": "",
                           "range_low": "", "range_high": "", "view_placeholder": placeholder or ""})
        self.state.client_only("position", "log_scale", "show_trajectories")
        self._merges = merges
        self._tree = None
        self.state.change("position")(self._on_position)
        self.state.change("log_scale")(self._on_log_scale)
        self.state.change("show_trajectories")(self._on_trajectories)
        ctrl.goto_level = self.goto
        ctrl.select_minimum = self.select
        ctrl.tree_click = self._on_tree_click
        self.ui = self._layout()
        self._update(level)

    def tab(self) -> "Explorer":
        """A new explorer of the same scene and valleys, at the u and scale this one started at (or was served
        at): the state of one more page, its own."""
        level, log = self._origin
        return Explorer(self.scene, self.levels, self.details, level=level, log=log, window_size=self._window_size,
                        curvature=self._curvature, placeholder=self.state.view_placeholder)

    # ------------------------------------------------------------- level
    @property
    def level(self) -> float:
        return self.view.level

    @property
    def log_scale(self) -> bool:
        return self._log_scale

    def goto(self, level: float) -> None:
        """Move u to ``level`` exactly (the slider goes to the nearest position); a finite number."""
        level = _finite(level, "level")
        self._pending = None  # a move of the slider not shown yet is overtaken
        self._show_position(self.levels.position(level, log=self._log_scale))
        self._update(level)

    def slide(self, position) -> None:
        """Move u to the slider's ``position`` (a whole number from 0 to ``STEPS``), on the current scale."""
        if not _is_int(position) or not 0 <= position <= STEPS:
            self._show_position(self._shown)  # put back as it was
            raise LandscapeError(f"the page sent position {_short(position)}: a whole number from 0 to {STEPS}")
        self._shown = int(position)
        level = self.levels.level(int(position), log=self._log_scale)
        if not _serving():  # called from Python: at once
            self._update(level)
            return
        # served: the moves of a drag that arrived together are one update (the last one), not one each
        if self._pending is None:
            asyncio.get_running_loop().call_soon(self._catch_up)
        self._pending = level

    def _catch_up(self) -> None:
        level, self._pending = self._pending, None
        if level is not None:
            self._update(level)

    def set_log_scale(self, log_scale) -> None:
        """The slider (and the surface's colours) on a log scale or not; u stays exactly where it is."""
        if not isinstance(log_scale, bool):
            with self.state:
                self.state.log_scale = self._log_scale
            raise LandscapeError(f"the page sent log scale {_short(log_scale)}: true or false")
        if log_scale == self._log_scale:
            return
        self._catch_up()  # u as the slider last set it
        self._log_scale = log_scale
        with self.state:
            self.state.log_scale = log_scale
        self.view.color_scale(log=log_scale, floor=self.levels.log_low)  # the slider's low end
        self._show_position(self.levels.position(self.level, log=log_scale))
        self._update(self.level)

    def _show_position(self, position: int) -> None:
        self._shown = position
        with self.state:
            self.state.position = position

    def _on_position(self, position, **_):  # the state changed: by the server (no move), or by a raw client
        if position != self._shown:
            self.slide(position)

    def _on_log_scale(self, log_scale, **_):
        if log_scale is not self._log_scale:
            self.set_log_scale(log_scale)

    def _update(self, level: float) -> None:
        at = self.view.set_level(level, render=not _serving())  # served, the page's frame renders it
        log = self._log_scale
        low, high = self.levels.range(log=log)
        minima = dict(zip(self.labels, self.levels.graph.losses.tolist()))
        merges = [(self.labels[m.i], self.labels[m.j], m.level) for m in self.levels.graph.merges()]
        floor = self.levels.log_low if log else None
        colors = dict(zip(self.labels, (valley_color(k) for k in at.valley_of)))
        self._tree = tree_image(minima, merges, level=level, tol=self.levels.tol, log_floor=floor, title="merge tree",
                                size=TREE_SIZE, colors=colors)
        self.state.update({
            "counts": at.text(), "level_text": f"u = {level:.6g}",
            "range_low": f"{low:.4g}", "range_high": f"{high:.4g}",
            "tree_src": "data:image/png;base64," + base64.b64encode(self._tree.png).decode(),
            "minimum_colors": [valley_color(k) for k in at.valley_of],
            "path_rows": [{"text": _path_row(c, below), "lit": below}
                          for c, below in zip(self.view.paths, self.view.path_below(level))]})
        self.state.flush()  # u and the counts leave now, before the frame is rendered
        self.server.controller.view_update()

    def _on_tree_click(self, x, y, width, height):
        if not all(_is_number(v) and math.isfinite(v) for v in (x, y, width, height)):
            raise LandscapeError(f"a click on the merge tree at {_short([x, y, width, height])}: four finite numbers")
        if self._tree is None or width <= 0 or height <= 0:
            return
        w, h = self._tree.size
        level = self._tree.level_at(float(x) * w / float(width), float(y) * h / float(height))
        if level is not None and math.isfinite(level):
            self.goto(level)

    def _on_trajectories(self, show_trajectories, **_):
        if not isinstance(show_trajectories, bool):
            with self.state:
                self.state.show_trajectories = True
            raise LandscapeError(f"show_trajectories {_short(show_trajectories)}: true or false")
        self.view.show_trajectories(show_trajectories)
        self.server.controller.view_update()

    # ------------------------------------------------------------- minima
    def select(self, index: int) -> None:
        """Show what is known of minimum ``index``: file, loss, gradient norm, curvature."""
        if not _is_int(index) or not 0 <= index < len(self.labels):
            raise LandscapeError(f"minimum {_short(index)}: a whole number from 0 to {len(self.labels) - 1}")
        index = int(index)
        d = dict(self.details[index])
        if "hessian_top" not in d and self._curvature is not None:
            d.update(self._curvature(int(index)))
            self.details[int(index)] = d
        at = self.levels.at(self.level)
        k = at.valley_of[int(index)]
        where = "above u" if k is None else f"valley {k + 1}" + _spurious(at, k)
        lines = [f"{self.labels[int(index)]} — {where}", f"file: {d.get('file', '-')}", f"loss: {d['loss']:.6g}",
                 f"|grad L|: {_num(d.get('grad_norm'))}",
                 f"Hessian top eigenvalue: {_num(d.get('hessian_top'))}",
                 f"Hessian trace: {_num(d.get('hessian_trace'))}"]
        self.state.selected = "\n".join(lines)

    # ------------------------------------------------------------- page
    def _layout(self):
        return page_layout(self)

    # ------------------------------------------------------------- serving
    def start(self, *, port: int = 0, host: str = "127.0.0.1", open_browser: bool = True, sock=None,
              ready=None) -> None:
        """Serve the page until interrupted (Ctrl-C, SIGTERM), to this machine's browser only.

        Each page (browser tab) gets an explorer of its own (:meth:`tab`: its own u, scale and 3-D view),
        starting at this one's u and scale; the first page gets this one.

        Parameters
        ----------
        port, host : int, str
            Where to listen (0: a free port), unless ``sock`` is given; see :func:`listen`.
        open_browser : bool
            Open the page in the default browser once it is served.
        sock : socket, optional
            A socket from :func:`listen` (bound before the surface is computed, so that a port in use
            is refused at once).
        ready : callable, optional
            ``ready(url)`` once the page can be opened; the url carries this launch's random secret,
            without which the server answers nothing.

        Raises
        ------
        LandscapeError
            The port is in use or not allowed.
        """
        from ._serve import listen, serve

        if self._origin != (self.level, self._log_scale):  # moved since it was made: the pages start here
            self._origin = (self.level, self._log_scale)
            self.state.view_placeholder = self.view.snapshot()
        own = sock is None
        sock = listen(port, host) if own else sock
        try:
            serve(self, sock, ready=ready, open_browser=open_browser)
        finally:
            if own:
                sock.close()

    def _ipython_display_(self):  # in a notebook, the page in an output cell
        self.ui._ipython_display_()

    def close(self) -> None:
        self.view.close()


def _serving() -> bool:
    """Whether this runs in the server's event loop (a page's call), where the page's next frame renders."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_int(value) -> bool:  # a whole number, as a page's JavaScript may send it (137 or 137.0)
    return _is_number(value) and math.isfinite(value) and float(value).is_integer()


def _finite(value, name: str) -> float:
    if not _is_number(value) or not math.isfinite(value):
        raise LandscapeError(f"{name} {_short(value)}: give a finite number")
    return float(value)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"


def _num(value) -> str:
    return "not known" if value is None else f"{value:.4g}"


def _spurious(at, k: int) -> str:
    """What is known of valley ``k`` at the state ``at``: spurious (proven apart from the global minima), or
    holding none of them only (no path joined it to one)."""
    if not at.spurious[k]:
        return ""
    return " (spurious)" if at.spurious_proven[k] else " (no global minimum joined to it: spurious if apart)"


def _path_row(curve, below: bool) -> str:
    return path_label(curve) + ("; below u" if below else "; above u")


def explore(checkpoints=(), *, paths=(), problem=None, valleys=None, level: float | None = None, log: bool = False,
            trajectories: bool = True, tol: float | None = None, seed: int = 0, device="cpu",
            dtype: torch.dtype = torch.float32, window_size=(900, 680), server=None, **scene_options) -> Explorer:
    """The level-set explorer of minima, paths and trajectories: a trame app, for the browser or a notebook.

    Parameters
    ----------
    checkpoints : sequence of str or path
        Minima (``landscape train``); with none, the known minima of an analytic ``problem``.
    paths : sequence of str or path
        Path files (``landscape connect``), drawn as tubes at their own losses.
    problem : Problem, optional
        For state_dicts and user problems, or alone an analytic problem (``ring``, ``himmelblau``).
    valleys : str or path, optional
        A valley graph written by ``landscape valleys FILES -o graph.json``; by default the merge tree
        is computed here as ``landscape valleys FILES`` computes it (same defaults, seed ``seed``).
    level : float, optional
        The first u (default: the lowest merge that changes the valley count).
    log : bool
        Heights, colours and the level slider on a log scale.
    tol : float, optional
        Spurious tolerance (:func:`landscape.valleys.spurious_tolerance` by default).
    **scene_options
        ``plane``, ``plane_options``, ``grid``, ``span``, ``split``, ``cache``, ``generator``,
        ``progress``: see :func:`landscape.build_scene` (the surface cache is ``render``'s).

    Returns
    -------
    Explorer
        ``.start(port=..., open_browser=...)`` serves it; in a notebook, display it.
    """
    from ..minima.curvature import minimum_metrics
    from ..paths.files import load_path
    from ..problems.checkpoint import load_checkpoint
    from ..valleys.files import read_graph
    from ..valleys.search import find_valleys
    from ..views.scene import build_scene, scene_from_files

    files = [str(f) for f in checkpoints]
    if files:
        cks = [load_checkpoint(f, problem=problem) for f in files]
        problem = cks[0].problem
        thetas = torch.stack([ck.theta for ck in cks])
        grads = [ck.grad_norm for ck in cks]
        scene = scene_from_files(files, paths=paths, problem=problem, trajectories=trajectories, device=device,
                                 dtype=dtype, **scene_options)
    elif problem is not None and hasattr(problem, "minima"):
        thetas = problem.minima.double()
        files = [f"min {i + 1}" for i in range(thetas.shape[0])]
        grads = [None] * len(files)
        found = {FilePath(f).stem: load_path(f, problem=problem)[0] for f in paths}
        scene = build_scene(problem, minima=dict(zip(files, thetas)), paths=found, device=device, dtype=dtype,
                            **scene_options)
    else:
        raise LandscapeError("nothing to explore: give checkpoints of minima, or --problem NAME of an analytic "
                             "problem (ring, himmelblau, double_well)")
    thetas = thetas.to(device, dtype)
    if valleys is not None:
        graph = read_graph(valleys, problem, thetas, files)
    else:
        graph, _ = find_valleys(problem, thetas, names=files, generator=torch.Generator().manual_seed(seed))
    missing = [i for i, g in enumerate(grads) if g is None]
    if missing:  # one batched call for the minima whose files do not say
        _, grad = problem.loss_and_grad(thetas[missing])
        for i, g in zip(missing, grad.norm(dim=1).tolist()):
            grads[i] = g
    details = [{"file": f, "loss": float(graph.losses[i]), "grad_norm": grads[i],
                **{k: graph.graph.nodes[i][k] for k in ("hessian_top", "hessian_trace") if k in graph.graph.nodes[i]}}
               for i, f in enumerate(files)]

    def curvature(i):
        m = minimum_metrics(problem, thetas[i:i + 1], generator=torch.Generator().manual_seed(0))[0]
        return {"hessian_top": m["hessian_top"], "hessian_trace": m["hessian_trace"]}

    finite = scene.surface.losses[torch.isfinite(scene.surface.losses)]
    extra = [float(finite.min()), float(finite.max())] if finite.numel() else []
    extra += [c.figures["max_loss"] for c in scene.curves if c.kind == "path"]
    levels = Levels.of(graph, tol=tol, losses=extra)
    return Explorer(scene, levels, details, level=level, log=log, server=server, window_size=window_size,
                    curvature=curvature)
