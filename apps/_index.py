"""What ``landscape --help`` shows, built without importing torch or the library (a second saved).

The group's text and each command's first paragraph (what click shortens into the command list).
``tests/test_cli.py`` checks that :func:`help_text` prints exactly what the real group prints.
"""

import click

#: The ``landscape`` group's help (also the real group's, :mod:`landscape_cli.cli`).
HELP = """Explore the loss landscapes of neural networks through their level sets.

\b
Train minima, connect them by certified low-loss paths, count valleys, render the surface:
  landscape train digits_mlp --seeds 0,1 -o minima/
  landscape info minima/*.pt
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
