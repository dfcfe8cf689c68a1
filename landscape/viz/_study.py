"""The plots of a study's report, drawn from what :mod:`landscape.studies.report` says they show."""

from __future__ import annotations

import io

from ._charts import figure


def figure_png(spec: dict, *, dpi: int = 120) -> bytes:
    """Draw a report figure as PNG bytes.

    Parameters
    ----------
    spec : dict
        ``title``, ``legend`` (the legend's title, or None for no legend), ``marker``, and
        ``panels``: a list of ``{xlabel, ylabel, logx, logy, xticks, curves}``, each curve
        ``{label, x, y, yerr}`` (``yerr`` None for a plain line, else error bars).

    Returns
    -------
    bytes
        The PNG file.
    """
    from matplotlib.ticker import NullFormatter

    panels = spec["panels"]
    fig = figure(4.2 * len(panels), 3.4)
    axs = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axs, panels):
        for curve in panel["curves"]:
            if curve["yerr"] is None:
                ax.plot(curve["x"], curve["y"], marker=spec["marker"], label=curve["label"])
            else:
                ax.errorbar(curve["x"], curve["y"], yerr=curve["yerr"], marker=spec["marker"], capsize=3,
                            label=curve["label"])
        if panel["logx"]:
            ax.set_xscale("log")
        if panel["xticks"]:  # a few grid values as labels: minor labels would collide within a decade
            ax.set_xticks(panel["xticks"], [f"{v:g}" for v in panel["xticks"]])
            ax.xaxis.set_minor_formatter(NullFormatter())
        if panel["logy"]:
            ax.set_yscale("log")
        ax.set_xlabel(panel["xlabel"])
        ax.set_ylabel(panel["ylabel"])
        ax.grid(True, alpha=0.3)
        if spec["legend"]:
            ax.legend(title=spec["legend"], fontsize=8)
    fig.suptitle(spec["title"], fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()
