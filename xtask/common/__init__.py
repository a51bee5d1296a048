"""What several stages share: params.yaml as typed config, the methods table, label conventions, the
prepared-data format, the metric definitions (training logs them per epoch, evaluation reports them),
atomic writes and the one user-facing error type. Every stage depends on it."""
