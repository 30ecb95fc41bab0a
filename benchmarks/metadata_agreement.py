"""How well ``t2i_r1.rewards.metadata.parse_prompt`` agrees with annotated prompts.

``measure_agreement(rows)`` compares the parser with annotated rows per task type and per field;
``python -m benchmarks.metadata_agreement --measure PATH`` prints the table for a JSON-lines file (the
reference schema, or GenEval's ``evaluation_metadata.jsonl``, converted). The task type is taken from
the file for the field columns (as for benchmark prompts, whose category is known) and inferred for
the task-type column. ``--prompts FILE --task TYPE`` reports how often the type of a plain prompt list
(e.g. T2I-CompBench's ``color_val.txt``) is inferred correctly.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from t2i_r1.rewards.metadata import TASK_TYPES, infer_task_type, parse_prompt, singular


@dataclass
class _Tally:
    n: int = 0
    hits: Counter = field(default_factory=Counter)  # column -> number of exact agreements
    seen: Counter = field(default_factory=Counter)  # column -> number of prompts the column applies to
    tp: Counter = field(default_factory=Counter)  # set-valued columns: items in both
    n_pred: Counter = field(default_factory=Counter)
    n_gold: Counter = field(default_factory=Counter)

    def exact(self, column: str, ok: bool) -> None:
        self.seen[column] += 1
        self.hits[column] += bool(ok)

    def overlap(self, column: str, pred: Iterable[Any], gold: Iterable[Any]) -> None:
        pred_set, gold_set = set(pred), set(gold)
        self.exact(column, pred_set == gold_set)
        self.tp[column] += len(pred_set & gold_set)
        self.n_pred[column] += len(pred_set)
        self.n_gold[column] += len(gold_set)

    def f1(self, column: str) -> float | None:
        if not self.seen[column]:
            return None
        denominator = self.n_pred[column] + self.n_gold[column]
        return 2 * self.tp[column] / denominator if denominator else 1.0

    def rate(self, column: str) -> float | None:
        return self.hits[column] / self.seen[column] if self.seen[column] else None


def _norm(text: str) -> str:
    return " ".join(str(text).lower().split())


def _lenient(text: str) -> str:
    """Last word, singular: "wooden picture frames" and "frame" agree leniently."""
    return singular(_norm(text).split(" ")[-1]) if text else ""


COLUMNS = (
    "task_type", "nouns", "nouns_f1", "nouns_head_f1", "attr_nouns", "attr_nouns_f1",
    "spatial_info", "spatial_present", "numeracy_info", "numeracy_f1",
)  # fmt: skip


def measure_agreement(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, float | int | None]]:
    """Per task type (and "all"): share of prompts where each field agrees exactly, plus F1 of items.

    Columns: ``task_type`` (inferred type == annotated), ``nouns`` (same set), ``nouns_f1``,
    ``nouns_head_f1`` (last word, singular), ``attr_nouns`` (same set), ``attr_nouns_f1``,
    ``spatial_info`` (obj1, obj2 and locality all equal, over prompts annotated with it),
    ``spatial_present`` (parser and annotation agree on whether there is spatial info),
    ``numeracy_info`` (same set of (object, count)), ``numeracy_f1``. Fields are compared
    case-insensitively; a column is None where no prompt of the type carries that field.
    """
    tallies: dict[str, _Tally] = defaultdict(_Tally)
    for row in rows:
        gold_task = row["task_type"]
        pred = parse_prompt(row["prompt"], task_type=gold_task)
        inferred = infer_task_type(row["prompt"])
        for tally in (tallies[gold_task], tallies["all"]):
            tally.n += 1
            tally.exact("task_type", inferred == gold_task)
            gold_nouns, pred_nouns = row.get("nouns", []), pred.get("nouns", [])
            tally.overlap("nouns", map(_norm, pred_nouns), map(_norm, gold_nouns))
            tally.overlap("nouns_f1", map(_norm, pred_nouns), map(_norm, gold_nouns))
            tally.overlap("nouns_head_f1", map(_lenient, pred_nouns), map(_lenient, gold_nouns))
            if "attr_nouns" in row:
                gold_attr, pred_attr = row["attr_nouns"], pred.get("attr_nouns", [])
                tally.overlap("attr_nouns", map(_norm, pred_attr), map(_norm, gold_attr))
                tally.overlap("attr_nouns_f1", map(_norm, pred_attr), map(_norm, gold_attr))
            if gold_task in ("spatial", "complex"):
                tally.exact("spatial_present", ("spatial_info" in row) == ("spatial_info" in pred))
            if "spatial_info" in row:
                gold_sp, pred_sp = row["spatial_info"], pred.get("spatial_info") or {}
                keys = ("obj1", "obj2", "locality")
                tally.exact("spatial_info", all(_norm(gold_sp[k]) == _norm(pred_sp.get(k, "")) for k in keys))
            if "numeracy_info" in row:
                gold_num = {(_norm(i["obj_name"]), int(i["num"])) for i in row["numeracy_info"]}
                pred_num = {(_norm(i["obj_name"]), int(i["num"])) for i in pred.get("numeracy_info", [])}
                tally.overlap("numeracy_info", pred_num, gold_num)
                tally.overlap("numeracy_f1", pred_num, gold_num)
    table: dict[str, dict[str, float | int | None]] = {}
    for task, tally in tallies.items():
        row_out: dict[str, float | int | None] = {"n": tally.n}
        for column in COLUMNS:
            row_out[column] = tally.f1(column) if column.endswith("_f1") else tally.rate(column)
        table[task] = row_out
    order = [t for t in TASK_TYPES if t in table] + [t for t in table if t not in TASK_TYPES and t != "all"]
    return {task: table[task] for task in [*order, "all"] if task in table}


_GENEVAL_TASKS = {
    "single_object": "object", "two_object": "object", "colors": "color", "color_attr": "color",
    "position": "spatial", "counting": "numeracy",
}  # fmt: skip


def from_geneval(row: Mapping[str, Any]) -> dict[str, Any]:
    """A GenEval ``evaluation_metadata.jsonl`` row (tag, include) in the reference schema."""
    try:
        task = _GENEVAL_TASKS[row["tag"]]
    except KeyError:
        raise ValueError(f"GenEval row with an unknown tag {row.get('tag')!r}: {row.get('prompt')!r}") from None
    include = row["include"]
    out: dict[str, Any] = {"prompt": row["prompt"], "task_type": task, "nouns": [i["class"] for i in include]}
    if task == "color":
        out["attr_nouns"] = [f"{i['color']} {i['class']}" for i in include if "color" in i]
    if task == "numeracy":
        out["numeracy_info"] = [{"obj_name": i["class"], "num": i["count"]} for i in include]
    if task == "spatial":
        placed = next(i for i in include if "position" in i)
        relation, anchor = placed["position"]
        out["spatial_info"] = {"obj1": placed["class"], "obj2": include[anchor]["class"], "locality": relation}
        out["nouns"] = [placed["class"], include[anchor]["class"]]
    return out


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Annotated prompts: reference-schema rows, or GenEval metadata rows (converted)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotated prompts file not found: {path} (JSON lines with prompt, task_type...)")
    rows = []
    with path.open() as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{number}: not a JSON line ({err})") from None
                rows.append(from_geneval(row) if "include" in row and "tag" in row else row)
    return rows


def format_table(table: Mapping[str, Mapping[str, float | int | None]]) -> str:
    header = ["task", "n", *COLUMNS]
    lines = [" | ".join(header), " | ".join("---" for _ in header)]
    for task, row in table.items():
        cells = [task, str(row["n"])]
        cells += ["-" if row[c] is None else f"{100 * float(row[c]):.1f}" for c in COLUMNS]
        lines.append(" | ".join(cells))
    return "\n".join(lines)


def task_type_accuracy(prompts: Iterable[str], task_type: str) -> tuple[float, Counter]:
    """Share of ``prompts`` whose inferred type is ``task_type``, and the count of each inferred type."""
    inferred = Counter(infer_task_type(p) for p in prompts)
    total = sum(inferred.values())
    return (inferred[task_type] / total if total else float("nan")), inferred


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--measure", metavar="PATH", help="annotated JSON-lines prompts: print the agreement table")
    parser.add_argument("--json", action="store_true", help="print the table as JSON instead of Markdown")
    parser.add_argument("--prompts", metavar="PATH", help="plain prompts, one a line: check task-type inference")
    parser.add_argument("--task", choices=TASK_TYPES, help="the task type of every prompt in --prompts")
    args = parser.parse_args(argv)
    if not args.measure and not args.prompts:
        parser.error("give --measure PATH and/or --prompts PATH --task TYPE")
    if args.measure:
        table = measure_agreement(read_jsonl(args.measure))
        print(json.dumps(table, indent=1) if args.json else format_table(table))
    if args.prompts:
        if not args.task:
            parser.error("--prompts needs --task")
        path = Path(args.prompts)
        if not path.is_file():
            parser.error(f"prompt file not found: {path}")
        prompts = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        share, inferred = task_type_accuracy(prompts, args.task)
        counts = dict(inferred.most_common())
        print(f"{path.name}: {len(prompts)} prompts, inferred as {args.task}: {100 * share:.1f}% {counts}")


if __name__ == "__main__":
    main()
