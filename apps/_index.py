"""What ``landscape --help`` and ``landscape problems`` show, without importing torch or the library.

``--help``: the group's text and each command's first paragraph (what click shortens into the command
list); ``tests/test_cli.py`` checks that :func:`help_text` prints exactly what the real group prints.
``problems``: the real command's output, kept in the user's cache (:func:`problems_cache`) under a key of the
installed version and the problem modules' sizes and times, so it is recomputed whenever they change.
"""

import hashlib
import json
import os
from importlib import metadata, util
from pathlib import Path

import click

#: The ``landscape`` group's help (also the real group's, :mod:`landscape_cli.cli`).
HELP = """Explore the loss landscapes of neural networks through their level sets.

\b
Train minima, connect them by certified low-loss paths, count valleys, render the surface:
  landscape train digits_mlp --seeds 0,1 -o minima/
  landscape info minima/*.pt

\b
Threads: waiting OpenMP threads sleep (OMP_WAIT_POLICY=PASSIVE, set at start) unless
OMP_WAIT_POLICY or GOMP_SPINCOUNT is set; OMP_NUM_THREADS sets how many (default: the cores).
"""

#: Each command's first paragraph of help, by name.
COMMANDS = {
    "align": "Align MOVED to REFERENCE by a permutation (and rescaling) of hidden units; write it to OUT.",
    "bench": "Throughput of the batched evaluator: K points batched vs a loop vs the torch.mm peak; and one "
             "path-refinement (DSS) round, its beads batched vs one at a time.",
    "chart": "Flat charts: loss along paths, lengths against levels, merge trees, normalized weights.",
    "connect": "Connect the minima in A.pt and B.pt by a path certified to stay under a loss level.",
    "explore": "Explore minima (FILES, checkpoints), their valleys and paths in a browser, with a level slider.",
    "info": "Describe landscape files: minima (problem, D, losses re-evaluated, norms, trajectory) and paths.",
    "problems": "List the embedded problems and their parameters.",
    "render": "Draw minima (FILES, checkpoints), paths and trajectories on a plane of the loss, in 3-D.",
    "study": "Scripted sweeps: a study file names a problem, a grid and a task; results go to SQLite.",
    "train": "Train minima of PROBLEM (default: digits_mlp), all seeds batched, one checkpoint per seed.",
    "valleys": "Count the valleys of {L <= u} among the minima FILES; find the spurious ones and the merge tree.",
}

#: The group's context settings (shared with the real group).
CONTEXT = {"help_option_names": ["-h", "--help"]}


def help_text(version: str = "") -> str:
    """The group's ``--help`` text, from :data:`HELP` and :data:`COMMANDS`."""

    @click.group(help=HELP, context_settings=CONTEXT)
    @click.version_option(version, "--version", "-V", prog_name="landscape")
    def landscape():
        pass

    for name, text in COMMANDS.items():
        landscape.add_command(click.Command(name, help=text))
    return group_help(landscape)


def group_help(group: click.Group) -> str:
    """A group's ``--help`` text as ``landscape --help`` prints it."""
    with click.Context(group, info_name="landscape", **group.context_settings) as ctx:
        return group.get_help(ctx) + "\n"


def problems_cache() -> Path:
    """``$XDG_CACHE_HOME/landscape/problems.json`` (``~/.cache/landscape/problems.json``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "landscape" / "problems.json"


def _problems_key() -> str | None:
    """The installed version and the size and time of every module of ``landscape.problems`` (no import)."""
    try:
        spec = util.find_spec("landscape")
        root = Path(next(iter(spec.submodule_search_locations))) / "problems"
        files = sorted(root.glob("*.py"))
        stamp = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]
        return hashlib.sha256(json.dumps([metadata.version("landscape"), stamp]).encode()).hexdigest()
    except (ImportError, StopIteration, TypeError, OSError, metadata.PackageNotFoundError):
        return None


def cached_problems(as_json: bool) -> str | None:
    """The cached output of ``landscape problems`` (``--json``), or None where there is none for this install."""
    key = _problems_key()
    try:
        stored = json.loads(problems_cache().read_text(encoding="utf-8"))
        return stored["json" if as_json else "text"] if key is not None and stored.get("key") == key else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def store_problems(outputs: dict) -> None:
    """Keep the outputs of ``landscape problems`` for the next call (atomically; a cache: failures are ignored)."""
    key = _problems_key()
    if key is None:
        return
    target = problems_cache()
    temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        temp.write_text(json.dumps({"key": key, **outputs}), encoding="utf-8")
        os.replace(temp, target)
    except OSError:
        temp.unlink(missing_ok=True)
