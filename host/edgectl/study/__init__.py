"""The pruning study (``edgectl study``), split by stage: ``grid`` (what a study is: its
cells, config, columns), ``cell`` (one cell: prune, fine-tune, export, measure),
``runner`` (the resumable run) and ``report`` (table, best trade-off, plots, report.md)."""

from edgectl.study.cell import Runner, TorchRunner, _export_pair
from edgectl.study.grid import (
    ACCURACY_TOLERANCE,
    BASELINE,
    COLUMN_NAMES,
    COLUMNS,
    DEFAULT_EPOCHS,
    DEFAULT_FINETUNE_EPOCHS,
    DEFAULT_SPARSITIES,
    DEFAULT_STEP,
    METHODS,
    REGIMES,
    RUNTIMES,
    Cell,
    StudyConfig,
    cell_key,
    finetune_chunks,
    iterative_steps,
    prune_steps,
)
from edgectl.study.report import (
    best_tradeoff,
    build_table,
    copy_report,
    markdown_table,
    plot_study,
    write_outputs,
    write_report,
)
from edgectl.study.runner import StudyResult, run_study

__all__ = [
    "ACCURACY_TOLERANCE", "BASELINE", "COLUMN_NAMES", "COLUMNS", "DEFAULT_EPOCHS",
    "DEFAULT_FINETUNE_EPOCHS", "DEFAULT_SPARSITIES", "DEFAULT_STEP", "METHODS", "REGIMES",
    "RUNTIMES", "Cell", "Runner", "StudyConfig", "StudyResult", "TorchRunner", "_export_pair",
    "best_tradeoff", "build_table", "cell_key", "copy_report", "finetune_chunks",
    "iterative_steps", "markdown_table", "plot_study", "prune_steps", "run_study",
    "write_outputs", "write_report",
]
