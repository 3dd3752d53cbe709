"""The transfer-learning pipeline's library, in layers that import only downward:
``runners`` (the command line, the local run, the cluster client), then ``kubeflow``
(``pipeline.py`` and ``components/`` at the repository's top level), then ``steps`` (plain
typed functions, one per container step), then ``helpers`` (storage, registry, data,
model)."""
