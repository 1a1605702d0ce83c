"""Experiment runner utilities: configs + CLI, output directories, tables, plots, kernel profiles,
jitted calls on flat states."""

from sparsejax.runner.calls import jit_flat_state
from sparsejax.runner.config import config_to_dict, parse_config
from sparsejax.runner.output import (
    aggregate,
    environment,
    markdown_table,
    prepare_output_dir,
    write_json,
    write_report,
)
from sparsejax.runner.plots import layer_sparsity_bars, tradeoff_curve
from sparsejax.runner.profiling import KernelTimes, kernel_times

__all__ = [
    "KernelTimes",
    "aggregate",
    "config_to_dict",
    "environment",
    "jit_flat_state",
    "kernel_times",
    "layer_sparsity_bars",
    "markdown_table",
    "parse_config",
    "prepare_output_dir",
    "tradeoff_curve",
    "write_json",
    "write_report",
]
