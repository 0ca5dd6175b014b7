"""README.md lists every registered variant (a new one must be documented where users look)."""

from __future__ import annotations

from pathlib import Path

from mixtrain_trainer.variants import VARIANTS

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_variant_is_in_the_readme():
    text = README.read_text()
    missing = sorted(name for name in VARIANTS if f"`{name}`" not in text)
    assert not missing, f"README.md's variant list lacks {missing}"
