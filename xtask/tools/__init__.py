"""Commands beside the pipeline, each ``python -m xtask.tools.<name>`` (bench, predict, parity, the metric,
trace and determinism checks, the rehearsal, the SLURM sweep, the image test, the metrics diff): no stage
depends on them."""
