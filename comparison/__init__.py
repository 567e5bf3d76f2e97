"""The ablation comparison behind docs/RESULTS.md: train every variant over several seeds, evaluate, report.

- `comparison.runner`: ``automlm-compare``, the runs (training in subprocesses, evaluation with `evaluation`).
- `comparison.report`: the markdown report (tables, paired bootstrap verdicts) and its charts.
- `comparison.untrained`: ``automlm-untrained-twin``, the untrained twin of a finished run, the floor every
  objective must beat.

This package trains models, so it imports `training`; `training` never imports it.
"""
