"""Stage 1: prompts and Chain-of-Draft demonstrations in seven harm categories (plus benign), balanced.

* :mod:`drirl.data.schema` — the :class:`Example` record, the taxonomy, reading/writing files, the bundled set;
* :mod:`drirl.data.importers` — public safety datasets mapped onto the taxonomy;
* :mod:`drirl.data.balance` — equal training examples per category;
* :mod:`drirl.data.demos` — teacher-written demonstrations, resumable;
* :mod:`drirl.data.splitting` — train/validation/test per category, merging files;
* :mod:`drirl.data.stats` — counts, lengths and form; :mod:`drirl.commands.data` — `drirl data ...`.
"""

from drirl.data.balance import BalanceConfig, BalanceReport, balance
from drirl.data.demos import (
    REFUSAL_PATTERN,
    DemosConfig,
    DemosReport,
    generate_demonstrations,
    is_refusal,
    load_templates,
    normalize_demonstration,
    render_template,
)
from drirl.data.importers import (
    IMPORTERS,
    MAPPINGS,
    ImportReport,
    import_beavertails,
    import_dataset,
    import_do_not_answer,
    import_generic,
    import_harmbench,
    import_pku_saferlhf,
    import_safety_prompts,
    import_strongreject,
    import_xstest,
)
from drirl.data.schema import (
    BENIGN,
    Category,
    Example,
    Taxonomy,
    assert_not_test,
    assert_train_only,
    bundled_dataset_paths,
    card_path,
    default_taxonomy,
    empty_categories,
    load_bundled,
    load_taxonomy,
    read_card,
    read_examples,
    read_examples_report,
    split_examples,
    train_examples,
    validation_examples,
    write_examples,
)
from drirl.data.splitting import SplitConfig, SplitReport, assign_splits, merge_files
from drirl.data.stats import dataset_stats, format_stats_table

__all__ = [
    "BENIGN", "IMPORTERS", "MAPPINGS", "REFUSAL_PATTERN", "BalanceConfig", "BalanceReport", "Category", "DemosConfig",
    "DemosReport", "Example", "SplitConfig", "SplitReport", "ImportReport", "Taxonomy", "assert_not_test",
    "assert_train_only", "assign_splits", "balance", "empty_categories", "merge_files", "bundled_dataset_paths",
    "card_path", "dataset_stats", "default_taxonomy", "format_stats_table", "generate_demonstrations",
    "import_beavertails", "import_dataset", "import_do_not_answer", "import_generic", "import_harmbench",
    "import_pku_saferlhf", "import_safety_prompts", "import_strongreject", "import_xstest", "is_refusal",
    "load_bundled", "load_taxonomy", "load_templates", "normalize_demonstration", "read_card", "read_examples",
    "read_examples_report", "render_template", "split_examples", "train_examples", "validation_examples",
    "write_examples",
]
