"""The repository's root, installed as ``shapes_pipeline.kubeflow``: ``pipeline.py`` (the DAG)
and ``components/`` (its KFP components) stay at the top level, where a Kubeflow project
keeps them, yet import under the library's own name rather than the generic ``pipeline``
and ``components`` (``pyproject.toml`` maps the folder)."""
