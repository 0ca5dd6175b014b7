"""``mixtrain train``: one run in this process, no Ray, with a per-epoch progress table."""

from __future__ import annotations

from mixtrain_trainer.config import RunConfig
from mixtrain_trainer.trainer import Trainer

COLUMNS = (
    ("epoch", "{:>5}", "epoch"),
    ("inputs", "{:>7}", "n_inputs"),
    ("mixed", "{:>6.1%}", "frac_mixed"),
    ("L_corr", "{:>7.3f}", "l_corr"),
    ("L_incorr", "{:>8.3f}", "l_incorr"),
    ("L_mid", "{:>7.3f}", "l_mid"),
    ("train_loss", "{:>10.4f}", "train_loss"),
    ("test_acc", "{:>8.2%}", "test_acc"),
    ("sec", "{:>6.1f}", "epoch_seconds"),
)



def format_row(row: dict) -> str:
    cells = []
    for title, fmt, key in COLUMNS:
        value = row.get(key)
        width = max(len(title), len(fmt.format(0)))
        cells.append(f"{'-':>{width}}" if value is None else f"{fmt.format(value):>{width}}")
    return " ".join(cells)


def header_line() -> str:
    return " ".join(f"{title:>{max(len(title), len(fmt.format(0)))}}" for title, fmt, _ in COLUMNS)


def run(cfg: RunConfig, resume: bool = False, out=None) -> dict:
    """Train ``cfg`` here, printing one line per epoch to ``out`` (None: the current stdout, looked up at
    print time, so a stream swapped since import is never used); returns the final metrics."""
    def progress(row: dict) -> None:
        print(format_row(row), file=out, flush=True)

    trainer = Trainer(cfg, on_epoch_end=progress)
    print(
        f"{cfg.variant} | {cfg.model} | {trainer.data.name}: {trainer.data.num_train} train / "
        f"{len(trainer.data.test_labels)} test | {trainer.device} | trial {trainer.trial_id}",
        file=out, flush=True,
    )
    print(header_line(), file=out, flush=True)
    final = trainer.fit(resume=resume)
    print(
        f"done: test top-1 {final['final_test_acc']:.2%}, {final['total_train_seconds']:.1f} s training, "
        f"{final['total_inputs']} inputs; history under {trainer.history.sweep_dir}",
        file=out, flush=True,
    )
    return final
