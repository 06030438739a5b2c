"""Scoring data sets that outgrow one machine: streaming, resumable, data-parallel.

- :func:`score_dataset` scores a data source (folder of images, list file, Parquet,
  WebDataset tar, Hugging Face data set on disk) with registered metrics into per-shard
  Parquet files; reruns resume; ``torchrun`` / ``accelerate launch`` split the shards.
- :func:`merge_shards` unions the shards into one table.
- :func:`open_source` reads data as deterministic, ordered row ranges.
"""

from .distributed import WorkerInfo, assign_shards, worker_info
from .runner import (
    METRICS,
    PRECISIONS,
    Metric,
    MetricParams,
    ScoreResult,
    SettingsMismatchError,
    batch_seed,
    merge_shards,
    metric_names,
    read_settings,
    register_metric,
    score_dataset,
)
from .sources import SOURCE_KINDS, DataSource, Rows, Shard, open_source, plan_shards

__all__ = [
    "score_dataset",
    "merge_shards",
    "read_settings",
    "open_source",
    "plan_shards",
    "DataSource",
    "Rows",
    "Shard",
    "SOURCE_KINDS",
    "Metric",
    "MetricParams",
    "METRICS",
    "register_metric",
    "metric_names",
    "batch_seed",
    "ScoreResult",
    "SettingsMismatchError",
    "PRECISIONS",
    "WorkerInfo",
    "worker_info",
    "assign_shards",
]
