"""Studies: a TOML file names a problem, a grid to sweep and a task; runs resume; reports are tables and plots.

- :mod:`.study` — :class:`Study` and its tasks, read and checked from a file (:func:`load_study`).
- :mod:`.tasks`, :mod:`.level_tasks` — ``TASKS``: what a task measures (training, implicit bias, geodesic
  lengths, valley counts); :mod:`.task_params` what they share.
- :mod:`.store` — the results store (SQLite, one writer); :mod:`.run` — :func:`run_study` on local worker
  processes or a Dask cluster; :mod:`.report` — tables and what the plots show.
"""

from .overrides import override_study
from .report import study_results, study_tables, write_report
from .run import run_study, study_status
from .study import Study, builtin_studies, load_study
from .tasks import TASKS

__all__ = ["Study", "TASKS", "builtin_studies", "load_study", "override_study", "run_study", "study_results", "study_status",
           "study_tables", "write_report"]
