"""The sync core: one ordered, verified pass from a source to a destination.

How a pass is made (docs/design.md draws it)::

    engine.py        Engine: the pass over every repository, the delete pass, the pass's record
      survey.py      read both sides of one repository and the source's closures
      plan.py        pure: a survey in, ordered steps out (steps.py: the vocabulary)
      execute.py     run each step once the steps it needs have succeeded
      writer.py      what each step does on the destination
        transfer.py      copy a blob, hashed while it streams, checked before it is visible
        replication.py   await a blob the storage's own replication brings (--blobs external)
      deletes.py     delete survey and plan;  policy.py: when deleting is safe
      records.py     the pass's record (history links after a pass that died);  replica.py: the replica marker
    layout.py        the storage layout: typed path specs, validation (the one place keys are built)
    manifest.py      manifests -> references;  closure.py: what a manifest needs;  discovery.py: reading a tree
    report.py        problems, counters, events

Public names are re-exported here; import them from ``syncagent.sync``.
"""

from .engine import DEFAULT_JOBS, Engine, SyncOptions
from .execute import Outcome, RepositoryRun, StepFailed
from .layout import Digest, InvalidPath, key_of, parse_key
from .plan import PlanSettings, RepositorySurvey, plan_repository
from .policy import DeleteAllowance, DeletePolicy
from .report import Problem, Report
from .steps import RepositoryPlan, Step, plan_lines
from .survey import survey_repository

__all__ = [
    "DEFAULT_JOBS", "DeleteAllowance", "DeletePolicy", "Digest", "Engine", "InvalidPath", "Outcome", "PlanSettings",
    "Problem", "Report", "RepositoryPlan", "RepositoryRun", "RepositorySurvey", "Step", "StepFailed", "SyncOptions",
    "key_of", "parse_key", "plan_lines", "plan_repository", "survey_repository",
]
