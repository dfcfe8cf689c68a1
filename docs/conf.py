"""Sphinx configuration of the landscape documentation.

Build: ``sphinx-build -W -b html docs docs/_build/html`` (warnings are errors). The gallery's scripts
(``examples/plot_*.py``) run during the build and their pictures are made then; with
``LANDSCAPE_GALLERY_QUICK=1`` they run at their smallest sizes (the test build, ``tests/test_docs.py``).
"""

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # landscape and landscape_cli from this checkout when not installed

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")  # off-screen, no display needed

import pyvista  # noqa: E402  (the gallery's 3-D pictures: pyvista's scraper, off-screen)

import landscape  # noqa: E402

import landscape.viz  # noqa: E402

pyvista.OFF_SCREEN = True
pyvista.BUILDING_GALLERY = True
pyvista.set_plot_theme("document")

project = "landscape"
author = "the landscape authors"
copyright = "the landscape authors"
version = release = landscape.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinx_click",
    "sphinx_gallery.gen_gallery",
    "sphinx_copybutton",
    "myst_parser",
]

smartquotes = False  # -- and "..." in commands stay as typed
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "**.ipynb_checkpoints", "auto_examples/*.ipynb", "auto_examples/*.py",
                    "auto_examples/*.zip", "auto_examples/*.json", "auto_examples/*.md5", "auto_examples/*.codeobj.json"]
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3

SUBPACKAGES = ["problems", "minima", "paths", "symmetries", "valleys", "views", "studies", "viz"]


def write_api_pages(folder: Path) -> None:
    """The API reference's source: every name of ``landscape.__all__``, then each subpackage's public names.

    Written at every build from the ``__all__`` lists themselves, so a new public name is documented (and its
    docstring rendered, or the build fails) without editing this site. A subpackage's page lists the names
    it exports beyond the top level's, and links the others to their top-level pages.
    """
    import importlib

    folder.mkdir(exist_ok=True)
    top = [n for n in landscape.__all__ if n != "__version__"]
    entries = ["API reference", "=============", "",
               "Generated from the docstrings. ``import landscape`` gives the names a user calls; the helpers stay",
               "in their subpackage. ``landscape.viz`` needs the ``viz`` extra.", "",
               ".. toctree::", "   :hidden:", ""] + [f"   {name}" for name in SUBPACKAGES] + [
               "", ".. currentmodule:: landscape", "", "The top level: ``landscape``", "-" * 28, "",
               ".. autosummary::", "   :toctree: generated", ""] + [f"   {n}" for n in top] + [
               "", "Subpackages", "-----------", ""] + [f"- :doc:`landscape.{name} <{name}>`" for name in SUBPACKAGES]
    _write(folder / "index.rst", entries)
    for name in SUBPACKAGES:
        module = importlib.import_module(f"landscape.{name}")
        own = [n for n in module.__all__ if not (n in top and getattr(landscape, n) is getattr(module, n))]
        shared = [n for n in module.__all__ if n not in own]
        title = f"landscape.{name}"
        lines = [title, "=" * len(title), "", f".. automodule:: landscape.{name}", "   :no-members:", "",
                 f".. currentmodule:: landscape.{name}", ""]
        if own:
            lines += [".. autosummary::", "   :toctree: generated", ""] + [f"   {n}" for n in own] + [""]
        if shared:
            lines += ["Also exported by ``landscape`` (documented there): " +
                      ", ".join(f":obj:`~landscape.{n}`" for n in shared) + ".", ""]
        _write(folder / f"{name}.rst", lines)


def _write(file: Path, lines) -> None:
    text = "\n".join(lines) + "\n"
    if not file.exists() or file.read_text() != text:  # unchanged pages keep their time: no needless rebuild
        file.write_text(text)


write_api_pages(HERE / "api")

# API reference: one page per public name, generated from the docstrings (numpydoc format)
autosummary_generate = True
autosummary_imported_members = True
autodoc_default_options = {"members": True, "show-inheritance": False}
autodoc_typehints = "none"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_validation_checks = set()

# the gallery: every examples/plot_*.py runs at build time; its figures and printed output go in the page
QUICK = os.environ.get("LANDSCAPE_GALLERY_QUICK") == "1"
sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "ignore_pattern": r"user_resnet\.py|__init__\.py",
    "image_scrapers": ("matplotlib", "pyvista"),
    "download_all_examples": False,
    "remove_config_comments": True,
    "abort_on_example_error": True,
    "only_warn_on_example_error": False,
    "within_subsection_order": "FileNameSortKey",
    "matplotlib_animations": False,
    "show_memory": False,
    "write_computation_times": True,
    "capture_repr": (),  # the printed lines only, not the repr of a block's last value
}

html_theme = "pydata_sphinx_theme"
html_title = f"landscape {release}"
html_static_path = []
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": [],
}
html_show_sourcelink = False


# The commands' help is terminal text (``|grad L| <= 1e-3*max(|L|, 0.1)``); in the CLI reference it must not
# be read as reStructuredText markup (substitutions, emphasis): escape those characters in the help lines.
def _escape_help(app, ctx, lines):
    for i, line in enumerate(lines):
        if line.lstrip().startswith((".. ", ":")):  # sphinx-click's own directives and fields
            continue
        lines[i] = line.replace("\\", "\\\\").replace("|", "\\|").replace("*", "\\*").replace("`", "\\`")


def setup(app):
    for event in ("description", "options", "arguments", "epilog"):
        app.connect(f"sphinx-click-process-{event}", _escape_help)
