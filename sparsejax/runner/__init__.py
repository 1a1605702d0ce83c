"""The experiment runner: the ``sparsejax <study>`` command and what studies and benchmarks share.

* studies: ``sparsejax <study> [flags]`` (:func:`cli`, :data:`STUDIES`); a study module
  declares ``Config(StudyConfig)`` with a docstring under every field, ``check(cfg)``
  (raise :class:`ConfigError` naming the field), ``run(cfg, ctx: RunContext) -> dict``
  (writes its files at the end through ``ctx``), ``figures(results, config)``,
  ``STUDY = Study(...)`` and ``main(argv) = run_study(STUDY, argv)``; see
  ``sparsejax/runner/studies/comparison.py`` and add the study to :data:`STUDIES`;
* configs: :func:`parse_config` (tyro: help, defaults, choices, ``--flag/--no-flag``),
  :func:`given_fields`, :func:`with_defaults`, :func:`config_to_dict`, :class:`ConfigError`;
* plug-ins: :func:`register_method` (:class:`Method`: score + selection + schedule, or a
  function; :class:`ScoreInputs`), ``sparsejax.data.register_dataset``, ``--plugin MODULE``;
* output: :func:`prepare_output_dir` (``--resume`` / ``--overwrite``, nothing deleted),
  :func:`atomic_write`, :func:`write_json`, :func:`write_text`, :func:`write_report`,
  :func:`save_figure` (PNG + PDF), :func:`environment`; local, ``gs://`` or ``epath`` paths;
* logging: :class:`MetricWriter` (:class:`JsonlWriter`, :class:`TensorBoardWriter`),
  :func:`create_writer`;
* tables and figures: :func:`aggregate`, :func:`markdown_table`, :func:`tradeoff_curve`,
  :func:`layer_sparsity_bars` (they return the Figure and never touch the backend);
* timing: :func:`time_calls`, :func:`time_run`, :func:`time_round_robin` → :class:`Timing`,
  :func:`jit_flat_state`; device time: :func:`kernel_times` → :class:`KernelTimes`.
"""

from sparsejax.runner._cli import STUDIES, get_study
from sparsejax.runner._cli import main as cli
from sparsejax.runner._config import (
    ConfigError,
    config_to_dict,
    given_fields,
    parse_config,
    with_defaults,
)
from sparsejax.runner._environment import environment
from sparsejax.runner._methods import (
    Method,
    ScoreInputs,
    get_method,
    method_names,
    register_method,
    unregister_method,
)
from sparsejax.runner._output import (
    as_path,
    atomic_write,
    prepare_output_dir,
    save_figure,
    write_json,
    write_report,
    write_text,
)
from sparsejax.runner._plots import layer_sparsity_bars, tradeoff_curve
from sparsejax.runner._profiling import KernelTimes, kernel_times
from sparsejax.runner._study import (
    RunContext,
    Study,
    StudyConfig,
    check_data,
    load_plugins,
    run_study,
)
from sparsejax.runner._tables import aggregate, markdown_table
from sparsejax.runner._timing import (
    Timing,
    jit_flat_state,
    time_calls,
    time_round_robin,
    time_run,
)
from sparsejax.runner._writers import (
    JsonlWriter,
    MetricWriter,
    MultiWriter,
    TensorBoardWriter,
    create_writer,
)

__all__ = [
    "STUDIES",
    "ConfigError",
    "JsonlWriter",
    "KernelTimes",
    "Method",
    "MetricWriter",
    "MultiWriter",
    "RunContext",
    "ScoreInputs",
    "Study",
    "StudyConfig",
    "TensorBoardWriter",
    "Timing",
    "aggregate",
    "as_path",
    "atomic_write",
    "check_data",
    "cli",
    "config_to_dict",
    "create_writer",
    "environment",
    "get_method",
    "get_study",
    "given_fields",
    "jit_flat_state",
    "kernel_times",
    "layer_sparsity_bars",
    "load_plugins",
    "markdown_table",
    "method_names",
    "parse_config",
    "prepare_output_dir",
    "register_method",
    "run_study",
    "save_figure",
    "time_calls",
    "time_round_robin",
    "time_run",
    "tradeoff_curve",
    "unregister_method",
    "with_defaults",
    "write_json",
    "write_report",
    "write_text",
]
