"""What every study shares: its common options, its description, and :func:`run_study`.

A study module declares ``Config`` (a frozen dataclass deriving :class:`StudyConfig`, a
docstring under every field), ``run(cfg, ctx) -> dict`` and ``STUDY = Study(...)``;
``main(argv)`` is ``run_study(STUDY, argv)``. :func:`run_study` imports ``--plugin``
modules, parses the command line, fills presets and ``--smoke`` values into the fields not
given, checks every value (exit code 2 and one line naming the flag), prepares the output
folder (``--resume`` / ``--overwrite``), opens the metric writers and runs the study.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import pathlib
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from sparsejax.runner._config import (
    ConfigError,
    config_to_dict,
    given_fields,
    parse_config,
    with_defaults,
)
from sparsejax.runner._output import (
    as_path,
    prepare_output_dir,
    save_figure,
    write_json,
    write_text,
)
from sparsejax.runner._writers import MetricWriter, create_writer

__all__ = ["RunContext", "Study", "StudyConfig", "check_data", "load_plugins", "run_study"]


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """Options every study shares."""

    out: str | None = None
    """Output folder: a local path or a gs://-style URI (runs/<study> unless given)."""
    resume: bool = False
    """Continue the run recorded in a non-empty --out (same config; from its checkpoints
    where the study keeps them)."""
    overwrite: bool = False
    """Move a non-empty --out aside (renamed <out>.replaced-<time>) and start afresh."""
    smoke: bool = False
    """Tiny sizes (seconds), for a quick check; flags given explicitly are kept."""
    progress: bool = True
    """Show training progress: a bar on a terminal, a few plain lines otherwise."""
    log: tuple[Literal["jsonl", "tensorboard"], ...] = ("jsonl",)
    """Metric writers: jsonl (metrics.jsonl in --out) and/or tensorboard (event files in
    --out/tensorboard; pip install 'sparsejax[tensorboard]')."""
    plugin: tuple[str, ...] = ()
    """Python modules or .py files to import first: they register methods
    (sparsejax.runner.register_method) or data sets (sparsejax.data.register_dataset)."""


@dataclasses.dataclass(frozen=True)
class RunContext:
    """What a study's ``run(cfg, ctx)`` gets besides its config.

    Attributes:
      study: the study's name.
      out: the output folder (a path object; local or ``epath``).
      command: the command line that reproduces the run (``sparsejax <study> ...``).
      writer: the metric writer (``ctx.writer.scoped("dense")`` for one phase).
      resumed: the folder held this run already (``--resume``).
    """

    study: str
    out: Any
    command: str
    writer: MetricWriter
    resumed: bool = False

    def write_json(self, name: str, data: Any) -> Any:
        """Write ``out/name`` atomically (:func:`sparsejax.runner.write_json`)."""
        return write_json(self.out / name, data)

    def write_text(self, name: str, text: str) -> Any:
        """Write ``out/name`` atomically."""
        return write_text(self.out / name, text)

    def save_figures(self, figures: Mapping[str, Any]) -> None:
        """Save each ``{stem: Figure}`` as ``out/stem.png`` and ``.pdf``, then close it."""
        save_figures(self.out, figures)


def save_figures(folder: Any, figures: Mapping[str, Any]) -> None:
    """Save each ``{stem: Figure}`` as ``folder/stem.png`` and ``.pdf`` and close it."""
    import matplotlib.pyplot as plt

    for stem, fig in figures.items():
        try:
            save_figure(fig, as_path(folder) / f"{stem}.png")
        finally:
            plt.close(fig)


@dataclasses.dataclass(frozen=True)
class Study:
    """A study as the command line sees it.

    Attributes:
      name: ``sparsejax <name>``.
      config: its ``Config`` class (derives :class:`StudyConfig`).
      run: ``run(cfg, ctx) -> results`` (a JSON-ready dict; writes its files at the end).
      summary: one line for ``sparsejax --help``.
      smoke: field -> value under ``--smoke`` (fields given explicitly are kept).
      presets: ``presets(cfg) -> {field: value}`` for fields not given (e.g. per data set).
      check: ``check(cfg)`` raising :class:`ConfigError` for a bad value, before any work.
      choices: ``choices() -> {field: values}`` known at run time (registered methods).
      figures: ``figures(results, config) -> {stem: Figure}`` (``sparsejax replot``).
    """

    name: str
    config: type
    run: Callable[[Any, RunContext], dict]
    summary: str
    smoke: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    presets: Callable[[Any], Mapping[str, Any]] | None = None
    check: Callable[[Any], None] | None = None
    choices: Callable[[], Mapping[str, Sequence[Any]]] | None = None
    figures: Callable[[dict, dict], dict[str, Any]] | None = None


_LOADED_FILES: dict[str, Any] = {}


def load_plugins(names: Sequence[str]) -> None:
    """Import each module name (from the current folder too) or ``.py`` file, once.

    Raises:
      ConfigError: naming ``--plugin`` and the module that failed to import.
    """
    for name in names:
        try:
            if name.endswith(".py") or os.sep in name:
                path = str(pathlib.Path(name).resolve())
                if path in _LOADED_FILES:
                    continue
                if not os.path.isfile(path):
                    raise FileNotFoundError(f"no file {path}")
                spec = importlib.util.spec_from_file_location(
                    f"sparsejax_plugin_{pathlib.Path(path).stem}", path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[spec.name] = module
                spec.loader.exec_module(module)
                _LOADED_FILES[path] = module
            else:
                cwd = os.getcwd()
                added = cwd not in sys.path
                if added:
                    sys.path.insert(0, cwd)
                try:
                    importlib.import_module(name)
                finally:
                    if added:
                        sys.path.remove(cwd)
        except Exception as err:  # any failure of the user's module, named in one line
            raise ConfigError("plugin", name, f"cannot import it: {type(err).__name__}: "
                              f"{err}") from err


def _plugin_args(argv: Sequence[str]) -> list[str]:
    names: list[str] = []
    for i, token in enumerate(argv):
        if token.startswith("--plugin="):
            names.append(token.split("=", 1)[1])
        elif token == "--plugin":
            for value in argv[i + 1:]:
                if value.startswith("--"):
                    break
                names.append(value)
    return names


def check_data(dataset: str, data_dir: str | None, field: str = "dataset") -> None:
    """Raise :class:`ConfigError` for an unknown data set, a missing ``--data-dir`` for one
    read from files, or a ``--data-dir`` that is not a folder."""
    from sparsejax.data import dataset_info, dataset_names

    if dataset not in dataset_names():
        raise ConfigError(field, dataset, f"unknown data set; known: {', '.join(dataset_names())}")
    need = dataset_info(dataset).data_dir
    if need == "required" and data_dir is None:
        raise ConfigError("data_dir", None, f"data set {dataset!r} is read from files: give "
                          "--data-dir FOLDER")
    if data_dir is not None and "://" not in data_dir and not os.path.isdir(data_dir):
        raise ConfigError("data_dir", data_dir, "is not a folder")


def _fail(prog: str, err: ConfigError) -> None:
    print(f"{prog}: error: {err}", file=sys.stderr)
    raise SystemExit(2)


def _check_common(cfg: StudyConfig) -> None:
    if "tensorboard" in cfg.log and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("log", cfg.log, "tensorboard is not installed: pip install "
                          "'sparsejax[tensorboard]'")


def parse_study(study: Study, argv: Sequence[str] | None = None) -> tuple[Any, frozenset[str]]:
    """Plugins imported, the command line parsed, presets and smoke values filled in and
    every value checked: ``(cfg, given fields)``. Exits with code 2 on a bad value."""
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = f"sparsejax {study.name}"
    try:
        load_plugins(_plugin_args(argv))
    except ConfigError as err:
        _fail(prog, err)
    smoke = ", ".join(f"{k}={v!r}" for k, v in study.smoke.items()) or "nothing"
    helps = {"smoke": f"Tiny sizes (seconds) for a quick check: sets {smoke}; flags given "
                      "explicitly are kept.",
             "out": "Output folder: a local path or a gs://-style URI."}
    cfg = parse_config(study.config, argv, prog=prog, helps=helps,
                       defaults={"out": f"runs/{study.name}"},
                       choices=study.choices() if study.choices else None)
    given = given_fields(study.config, argv)
    values = dict(study.presets(cfg)) if study.presets else {}
    if cfg.smoke:
        values.update(study.smoke)
    cfg = with_defaults(cfg, values, given)
    if cfg.out is None:
        cfg = dataclasses.replace(cfg, out=f"runs/{study.name}")
    try:
        _check_common(cfg)
        if study.check is not None:
            study.check(cfg)
    except ConfigError as err:
        _fail(prog, err)
    return cfg, given


def run_study(study: Study, argv: Sequence[str] | None = None) -> dict:
    """Run ``study`` from a command line (``sys.argv[1:]`` by default).

    Everything that can be wrong with the command line is found before any work: a bad
    value exits with code 2 and one line ``sparsejax <study>: error: --flag value: why``.
    A non-empty ``--out`` is refused unless ``--resume`` or ``--overwrite`` is given;
    ``config.json`` is written when the run starts, results only when it succeeds.

    Returns:
      The study's results (what ``results.json`` holds).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    cfg, _ = parse_study(study, argv)
    prog = f"sparsejax {study.name}"
    try:
        out = as_path(cfg.out)
        resumed = bool(cfg.resume) and out.exists() and any(True for _ in out.iterdir())
        out = prepare_output_dir(cfg.out, config_to_dict(cfg), resume=cfg.resume,
                                 overwrite=cfg.overwrite, study=study.name)
    except ConfigError as err:
        _fail(prog, err)
    command = " ".join(["sparsejax", study.name, shlex.join(argv)]).strip()
    with create_writer(cfg.log, out) as writer:
        ctx = RunContext(study=study.name, out=out, command=command, writer=writer,
                         resumed=resumed)
        return study.run(cfg, ctx)
