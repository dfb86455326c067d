"""Suites: a matrix of fine-tuning runs (models x strategies x datasets x seeds) as one command.

A suite spec (YAML, see ``docs/suite.md``) names the base models, strategies, datasets,
prompt protocols, seeds and the training budget. :func:`run_suite` (``samtune suite``)
checks all of it before anything trains, evaluates each base model zero-shot once per
dataset and protocol, runs :func:`samtune.fit` and :func:`samtune.evaluate` once per cell,
and writes a leaderboard::

    OUT/
      spec.yaml                                      the spec of the last run, normalized
      zero-shot/<model>/<dataset>/<protocol>/        EvalReport files + zero-shot.json
      runs/<model>/<dataset>/<strategy>/seed-<n>/    fit's run folder, plus eval/<protocol>/,
                                                     train.json and cell.json
      leaderboard.md, leaderboard.json, leaderboard.png

Every record is written atomically. ``train.json`` marks a finished training, ``cell.json``
(written last) a finished cell: a rerun skips finished cells, evaluates cells whose training
finished, and resumes the others from fit's checkpoints. A folder trained with other settings
than the spec's is refused (a rerun never mixes two configurations). The leaderboard is
computed from the ``cell.json`` files alone, so each of its numbers can be traced to a run.

A SAM 3 model runs the ``text`` protocol (trained and evaluated by category name, scored by
class-aware AP, semantic mIoU and cgF1 in a table of its own); the other models run ``box``,
``point`` and ``clicks:N`` (instance mIoU).

Files: :mod:`.spec` (the YAML and its checks), :mod:`.plan` (cells, folders, what is done),
:mod:`.run` (:func:`run_suite`), :mod:`.leaderboard` (the tables and plot), :mod:`.text`
(which model runs which protocol, the phrases of text cells) and :mod:`.leaderboard_text`
(the text cells' table). Names are imported on first use (PEP 562).
"""

from __future__ import annotations

from .._lazy import lazy_getattr

# public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    "Cell": ".spec",
    "SuiteSpec": ".spec",
    "fit_config": ".spec",
    "load_spec": ".spec",
    "parse_spec": ".spec",
    "PlannedCell": ".plan",
    "plan_suite": ".plan",
    "read_datasets": ".plan",
    "read_record": ".plan",
    "SuiteEvent": ".run",
    "SuiteResult": ".run",
    "run_suite": ".run",
    "build_leaderboard": ".leaderboard",
    "format_leaderboard": ".leaderboard",
    "plot_gains": ".leaderboard",
    "write_leaderboard": ".leaderboard",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(globals(), _EXPORTS)
