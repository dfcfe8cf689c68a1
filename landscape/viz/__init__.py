"""Views of landscapes: 3-D scenes with pyvista, 2-D charts with matplotlib, the explorer with trame.

The only part of landscape that uses pyvista or matplotlib (``import landscape`` does not), and
it imports them only when a view is drawn (trame only when :func:`explore` builds its page). It needs the ``viz`` extra:
``pip install 'landscape[viz]'``.
"""

from ._charts import (PATH_AXES, figure, length_table, path_profiles, plot_length_surface, plot_lengths,
                      plot_path_losses, read_rows, save_figure)
from ._explore import Explorer, explore
from ._meshes import SceneMeshes, auto_levels, scene_meshes
from ._serve import listen
from ._render import (FORMATS, PATH_COLORINGS, PATH_COLORS, VIEWS, check_outputs, has_display, plot_scene,
                      render)
from ._study import figure_png
from ._tree import MergeTree, merge_tree, plot_disconnectivity
from ._weights import NormalizedWeights, normalized_weights, plot_normalized_weights

__all__ = [
    "FORMATS", "PATH_AXES", "PATH_COLORINGS", "PATH_COLORS", "VIEWS", "Explorer", "MergeTree", "NormalizedWeights",
    "SceneMeshes", "auto_levels", "check_outputs", "explore", "figure", "figure_png", "has_display", "length_table", "listen", "merge_tree",
    "normalized_weights", "path_profiles", "plot_disconnectivity", "plot_length_surface", "plot_lengths", "plot_normalized_weights",
    "plot_path_losses", "plot_scene", "read_rows", "render", "save_figure", "scene_meshes",
]
