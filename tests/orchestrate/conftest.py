"""Shared fixtures for the sweep-layer tests: one embedded Ray for the whole session, small sweep files."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def ray_local():
    import ray

    from orchestrate.runner import init_ray

    os.environ.setdefault("MIXTRAIN_CACHE", str(REPO / ".pytest_cache" / "mixtrain-data"))
    init_ray(None, num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture
def write_sweep(tmp_path):
    """Write a sweep file whose storage and MLflow store live in tmp_path; returns (path, uri, root)."""

    def write(name: str, **fields) -> tuple[Path, str, Path]:
        root = tmp_path / "results"
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        spec = {
            "name": name,
            "base": {
                "dataset": {"name": "synthetic", "synthetic_train": 128, "synthetic_test": 64, "image_size": 16},
                "model": "resnet8", "model_width": 4, "epochs": 3, "batch_size": 32,
                "optimizer": {"lr": 0.05},
            },
            "variants": ["baseline", "mixtrain-cutmix"],
            "resources": {"cpu": 1},
            "max_failures": 2,
            "tracking": {"uri": uri},
            "storage": {"root": str(root)},
        }
        for key, value in fields.items():
            if key == "base":
                spec["base"].update(value)
            else:
                spec[key] = value
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(spec))
        return path, uri, root

    return write


def mixtrain_cmd() -> list[str]:
    return [sys.executable, "-m", "orchestrate.cli"]
