"""The explorer's page: a trame (vuetify 3) layout of the level slider, the 3-D view and the side panel.

The slider and the switches reach the server as calls on each change (``update:modelValue``), not as
synchronised state: trame's client holds state changes back while any call is pending (a frame of the
3-D view, for one), which made u follow the arrow keys late.
"""

from __future__ import annotations

from ..views.levels import STEPS

#: Pixels of the merge tree in the side panel (which is 440 pixels wide).
TREE_SIZE = (420, 480)


def page_layout(explorer):
    """The page of ``explorer`` (an :class:`~landscape.viz.Explorer`) on its trame server."""
    from trame.ui.vuetify3 import SinglePageLayout
    from trame.widgets import html, vuetify3 as v3
    from trame_pyvista import PyVistaRemoteView

    with SinglePageLayout(explorer.server, full_height=True) as layout:
        layout.title.set_text(f"landscape explore — {explorer.scene.problem.name}")
        layout.icon.hide()
        with layout.toolbar:
            v3.VSpacer()
            v3.VSwitch(v_model=("log_scale",), label="log scale", hide_details=True, density="compact",
                       classes="mx-2", style="max-width: 150px", id="log-scale",
                       update_modelValue=(explorer.set_log_scale, "[$event]"))
            v3.VSwitch(v_model=("show_trajectories",), label="trajectories", hide_details=True, density="compact",
                       classes="mx-2", style="max-width: 170px", disabled=not explorer.view.trajectories,
                       update_modelValue=(explorer._on_trajectories, "[$event]"))
        with layout.content:
            with html.Div(style="display: flex; height: 100%; gap: 12px; padding: 8px"):
                with html.Div(style="flex: 1 1 auto; display: flex; flex-direction: column; min-width: 0"):
                    with html.Div(style="display: flex; align-items: center; gap: 10px"):
                        html.Span("{{ range_low }}", id="level-low", style="font-size: 13px")
                        with html.Div(id="level-slider", style="flex: 1 1 auto"):
                            v3.VSlider(v_model=("position",), min=0, max=STEPS, step=1, hide_details=True,
                                       color="primary", update_modelValue=(explorer.slide, "[$event]"))
                        html.Span("{{ range_high }}", id="level-high", style="font-size: 13px")
                    html.Div("{{ counts }}", id="valley-counts",
                             style="font-size: 20px; font-weight: 600; margin: 2px 0 6px 4px")
                    with html.Div(style="flex: 1 1 auto; min-height: 420px; position: relative"):
                        # the scene as it was at the start, shown at once, until the server's first frame
                        # (which covers it) arrives
                        html.Img(src=("view_placeholder",), id="view-placeholder", v_show="view_placeholder",
                                 style="position: absolute; inset: 0; width: 100%; height: 100%; "
                                       "object-fit: contain; z-index: 0")
                        with html.Div(id="view", style="position: absolute; inset: 0; z-index: 1"):
                            view = PyVistaRemoteView(explorer.view.plotter, interactive_ratio=1, still_ratio=1)
                        explorer.server.controller.view_update = view.update
                with html.Div(id="side-panel", style="flex: 0 0 440px; overflow-y: auto; font-size: 14px"):
                    html.Div("Merge tree (click a merge to move u there)", style="font-weight: 600")
                    html.Img(src=("tree_src",), id="merge-tree",
                             style=f"width: {TREE_SIZE[0]}px; height: {TREE_SIZE[1]}px; cursor: pointer",
                             click=(explorer._on_tree_click, "[$event.offsetX, $event.offsetY, "
                                                             "$event.target.clientWidth, $event.target.clientHeight]"))
                    with html.Div(style="margin: 4px 0"):
                        for k, m in enumerate(explorer._merges):
                            v3.VChip(f"{m['level']:.4g}: {m['before']} → {m['after']} valleys", size="small",
                                     classes="ma-1", id=f"merge-{k}", click=(explorer.goto, f"[{m['level']!r}]"))
                    html.Div("Minima (click for details; colour = valley at u)", style="font-weight: 600")
                    with html.Div(style="margin: 4px 0"):
                        for k, label in enumerate(explorer.labels):
                            with v3.VChip(size="small", classes="ma-1", variant="outlined", id=f"minimum-{k}",
                                          click=(explorer.select, f"[{k}]")):
                                html.Span(style=(f"{{ background: minimum_colors[{k}], width: '12px', "
                                                 "height: '12px', borderRadius: '6px', marginRight: '6px', "
                                                 "border: '1px solid #555', display: 'inline-block' }",))
                                html.Span(label)
                    html.Pre("{{ selected }}", id="minimum-details",
                             style="white-space: pre-wrap; font-size: 13px; margin: 4px 0")
                    if explorer.view.paths:
                        html.Div("Paths (lit when their certified max is ≤ u)", style="font-weight: 600")
                        html.Div("{{ row.text }}", v_for="row in path_rows",
                                 style=("{ opacity: row.lit ? 1 : 0.5, margin: '2px 0' }",))
    return layout
