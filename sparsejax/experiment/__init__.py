"""Experiment runner utilities: configs + CLI, output directories, tables and plots."""

from sparsejax.experiment.config import config_to_dict, parse_config
from sparsejax.experiment.output import (
    aggregate,
    environment,
    markdown_table,
    prepare_output_dir,
    write_json,
)
from sparsejax.experiment.plots import layer_sparsity_bars, tradeoff_curve

__all__ = [
    "aggregate",
    "config_to_dict",
    "environment",
    "layer_sparsity_bars",
    "markdown_table",
    "parse_config",
    "prepare_output_dir",
    "tradeoff_curve",
    "write_json",
]
