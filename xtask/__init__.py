"""xtask: Cross-Task Consistency Learning rebuilt as a DVC pipeline. Each sub-package is one unit the
stages depend on (dvc.yaml): ``common``, ``data``, ``training``, ``evaluation``, ``reporting``; ``runtime``
and ``tools`` change no result."""
