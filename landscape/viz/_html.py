"""A self-contained interactive HTML page of a pyvista scene, written without starting a server.

The page is trame's standalone vtk.js viewer (``OfflineLocalView``) with the scene embedded as
base64: the same file ``Plotter.export_html`` writes. That method launches a trame web server
in the process (binding a port and patching asyncio with nest_asyncio2, and trying to download
a VTK.wasm bundle from the network) only to call its scene serializer; here the serializer of
trame-vtk is called directly on the render window, so an export is a pure function of the scene.
"""

from __future__ import annotations

import html
import io
import json
import re
import zipfile

from .._errors import LandscapeError


def scene_archive(plotter) -> bytes:
    """The plotter's scene as the zipped ``index.json`` that vtk.js's OfflineLocalView loads."""
    try:
        from trame_vtk.modules.vtk.serializers import (SynchronizationContext, extract_array_hash,
                                                       initialize_serializers, reference_id, serialize)
    except ImportError:
        raise LandscapeError("HTML export needs trame-vtk: pip install 'landscape[viz]'") from None
    initialize_serializers()
    context = SynchronizationContext()
    window = plotter.render_window
    camera = window.GetRenderers().GetFirstRenderer().GetActiveCamera()
    context.set_ignore_last_dependencies(True)
    scene = serialize(None, window, "landscape-view", context, 1)
    context.set_ignore_last_dependencies(False)
    if not scene:
        raise LandscapeError("the scene could not be serialized for HTML; write .png or .vtm instead")
    scene["extra"] = {"vtkRefId": reference_id(window), "centerOfRotation": list(camera.GetFocalPoint()),
                      "camera": reference_id(camera)}
    hashes = {}
    for entry in extract_array_hash(scene):
        hashes[entry["hash"]] = dict(**entry, content=context.get_cached_data_array(entry["hash"], False))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("index.json", json.dumps({"hashes": hashes, "scene": scene}),
                         compress_type=zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def html_text(plotter, legend=()) -> str:
    """The HTML page (a string) showing the plotter's scene, interactive in any browser with WebGL.

    ``legend``: (text, colour, symbol) rows drawn over the view's top-left corner, the first one its
    title (also the page's title); the web viewer draws no text actors of its own.
    """
    from trame_vtk.tools.vtksz2html import write_html

    out = io.StringIO()
    write_html(scene_archive(plotter), out)
    page = out.getvalue()
    if legend:
        title = html.escape(str(legend[0][0]))
        page = re.sub(r"<title>.*?</title>", f"<title>{title}</title>", page, count=1, flags=re.S)
        # the viewer replaces its container's content: give it one (it looks for ``.content``) beside the legend
        view = '<div class="content" style="position:fixed;top:0;left:0;width:100%;height:100%"></div>\n'
        page = page.replace("</body>", view + _legend_html(legend) + "</body>", 1)
    return page


def _legend_html(legend) -> str:
    rows = []
    for k, (text, color, symbol) in enumerate(legend):
        mark = "" if symbol == "none" else (
            f'<span style="display:inline-block;width:0.8em;height:0.8em;margin-right:0.4em;background:{_css(color)};'
            f'border-radius:{"50%" if symbol == "circle" else "0"}"></span>')
        weight = "bold" if k == 0 else "normal"
        rows.append(f'<div style="font-weight:{weight};color:{_css(color) if k else "black"}">{mark}'
                    f"{html.escape(str(text))}</div>")
    return ('<div id="landscape-legend" style="position:fixed;top:8px;left:8px;z-index:10;padding:6px 9px;'
            "background:rgba(255,255,255,0.85);border:1px solid #999;font:13px sans-serif;line-height:1.45;"
            f'pointer-events:none">{"".join(rows)}</div>\n')


def _css(color) -> str:
    """A colour as CSS: names and #hex pass through, RGB triples in [0, 1] become rgb()."""
    if isinstance(color, str):
        return html.escape(color)
    r, g, b = (int(round(255 * float(c))) for c in tuple(color)[:3])
    return f"rgb({r},{g},{b})"
