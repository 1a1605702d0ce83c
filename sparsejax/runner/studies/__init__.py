"""The studies behind ``sparsejax <study>``: one module per study, loaded on demand.

Each module defines ``Config`` (a frozen dataclass deriving
:class:`sparsejax.runner.StudyConfig`, a docstring under every field), ``run(cfg, ctx)``
(returns the results dict and writes its files at the end through ``ctx``), optionally
``figures(results, config)`` (redraws the figures from ``results.json``), ``STUDY``
(:class:`sparsejax.runner.Study`) and ``main(argv) = run_study(STUDY, argv)``; the study is
listed in :data:`sparsejax.runner.STUDIES`. ``comparison.py`` is the model to follow.
"""
