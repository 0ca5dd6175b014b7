"""The sweep layer: sweep files -> trials on Ray Tune, tracked in MLflow, reported from the histories.

The only package that imports Ray, MLflow and Optuna, each through one small adapter module
(``runner``, ``tracking``), because their APIs move between versions.
"""
