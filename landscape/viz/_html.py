"""A self-contained interactive HTML page of a pyvista scene, written without starting a server.

The page is trame's standalone vtk.js viewer (``OfflineLocalView``) with the scene embedded as
base64: the same file ``Plotter.export_html`` writes. That method launches a trame web server
in the process (binding a port and patching asyncio with nest_asyncio2, and trying to download
a VTK.wasm bundle from the network) only to call its scene serializer; here the serializer of
trame-vtk is called directly on the render window, so an export is a pure function of the scene.
"""

from __future__ import annotations

import io
import json
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


def html_text(plotter) -> str:
    """The HTML page (a string) showing the plotter's scene, interactive in any browser with WebGL."""
    from trame_vtk.tools.vtksz2html import write_html

    out = io.StringIO()
    write_html(scene_archive(plotter), out)
    return out.getvalue()
