"""Prepare a CSV for training (splits, preprocessing, schema.json).

    python solutions/prepare_dataset.py --data-path data/train.csv --output-dir processed_data --test-split 0.2

It prints the column report (each column's role and why) and warnings with numbers (a feature that alone
predicts the target, a rare class, a target that looks like an ID or a recoding of another column).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from pipeline import cli  # noqa: E402

# pipeline.data (and pandas) load only once the flags are parsed, so --help answers at once; its default cap on
# a categorical's levels is repeated here (tests/test_cli_help.py checks that the two agree).
MAX_LEVELS = 50


def column_list(text: str) -> list[str]:
    """'a, b' -> ['a', 'b'] (names as in the CSV header, surrounding spaces ignored). A name that holds a comma
    goes to --drop-column / --categorical-column instead, which take it whole."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected column names separated by commas, got {text!r}")
    return names


def column_name(text: str) -> str:
    """One column name as typed, commas included ('price, EUR'); surrounding spaces ignored as in `column_list`."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a column name, got an empty one")
    return text.strip()


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


DELIMITER_NAMES = {"\\t": "\t", "tab": "\t", "\\\\": "\\", "space": " "}


def delimiter_text(text: str) -> str:
    """The --delimiter as typed, with the spellings a shell makes easy: '\\t' or 'tab' for a tab, 'space'.
    Anything else is passed on as it is (prepare refuses what is not one character)."""
    return DELIMITER_NAMES.get(text, DELIMITER_NAMES.get(text.lower(), text))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-path", type=Path, required=True, help="input CSV (UTF-8, with a header row)")
    parser.add_argument("--output-dir", type=Path, required=True, help="folder for the splits and schema.json")
    parser.add_argument("--test-split", type=float, default=0.2, help="fraction of rows for test (default 0.2)")
    parser.add_argument("--val-split", type=float, default=0.1, help="fraction of rows for validation (default 0.1)")
    parser.add_argument("--target", help="target column (default: 'target' or 'label', else the last column)")
    parser.add_argument("--task", choices=["auto", "classification", "regression"], default="auto",
                        help="auto (default), classification or regression")
    parser.add_argument("--seed", type=int, default=42, help="seeds the splits: the same seed gives the same rows (default 42)")
    parser.add_argument("--drop", type=column_list, action="extend", default=[], metavar="COL[,COL...]",
                        help="columns to leave out (e.g. an ID or a value only known after the outcome); repeatable")
    parser.add_argument("--drop-column", dest="drop", type=column_name, action="append", metavar="NAME",
                        help="one column to leave out, its name taken whole (for a name with a comma); repeatable")
    parser.add_argument("--categorical", type=column_list, action="extend", default=[], metavar="COL[,COL...]",
                        help="columns to one-hot encode although they hold numbers (integer codes: school, product "
                             "type); repeatable")
    parser.add_argument("--categorical-column", dest="categorical", type=column_name, action="append",
                        metavar="NAME", help="one categorical column, its name taken whole (for a name with a "
                                             "comma); repeatable")
    parser.add_argument("--max-levels", type=positive_int, default=MAX_LEVELS, metavar="N",
                        help=f"one-hot columns per categorical feature at most; rarer levels encode as all zeros "
                             f"(default {MAX_LEVELS})")
    parser.add_argument("--group-by", choices=["rows", "features"], default="rows",
                        help="what stays on one side of the split: rows (exact duplicate rows, the default) or "
                             "features (rows with identical features, whatever their labels: no test input was "
                             "seen in training; a table with few distinct inputs may then not split)")
    parser.add_argument("--encoding", default="utf-8", help="text encoding of the CSV (default utf-8, BOM allowed)")
    parser.add_argument("--delimiter", type=delimiter_text, default=",",
                        help="field separator, one character (default ','; '\\t' or 'tab' for a tab)")
    return parser


def shown_warnings(found: list[dict], per_kind: int = 5) -> list[str]:
    """The warnings' messages, at most `per_kind` of each kind (a target with hundreds of rare classes would
    print one line per class); the rest are counted. schema.json keeps them all."""
    shown, counts = [], {}
    for item in found:
        counts[item["kind"]] = counts.get(item["kind"], 0) + 1
        if counts[item["kind"]] <= per_kind:
            shown.append(item["message"])
    shown += [f"{n - per_kind:,} more '{kind}' warning(s) like these; all are in schema.json"
              for kind, n in counts.items() if n > per_kind]
    return shown


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        from pipeline import data

        notes: list[str] = []
        try:
            result = data.prepare_dataset(
                args.data_path, args.output_dir, test_split=args.test_split, val_split=args.val_split,
                target=args.target, task=args.task, seed=args.seed, encoding=args.encoding,
                delimiter=args.delimiter, notes=notes, drop=args.drop,
                categorical=args.categorical, max_levels=args.max_levels, group_by=args.group_by)
        finally:
            for note in notes:
                print(note)
        schema = result.schema
        rows = schema["rows"]
        print()
        print(result.column_table())
        print()
        for message in shown_warnings(result.schema["warnings"]):
            print(f"warning: {message}")
        if result.warnings:
            print()
        print(f"features: {len(schema['features']['numeric'])} numeric, {len(schema['features']['categorical'])} "
              f"categorical -> {len(schema['features']['processed'])} processed")
        if schema["classes"] is not None:
            print(f"classes: {data.some(schema['classes'], 20, quote=False)}")
        print(f"rows: train {rows['train']}, val {rows['val']}, test {rows['test']}")
        print(f"wrote {result.output_dir}/ (schema.json + {len(rows)} splits)")
        return cli.EXIT_OK

    return cli.guarded(body)


if __name__ == "__main__":
    sys.exit(main())
