"""The README's results table from the runner's JSON lines:
``python -m benchmarks --table benchmarks/results/cpu-2core.jsonl``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# benchmark -> (the figure shown for each side, its unit)
FIGURES: dict[str, tuple[str, str]] = {
    "st_train": ("audio_sec_per_sec", "audio s/s"),
    "ctc_train": ("audio_sec_per_sec", "audio s/s"),
    "padding": ("padding", "padded share"),
    "beam_search": ("seconds", "s"),
    "data_loading": ("clips_per_sec", "clips/s"),
    "encoder_rtf": ("rtf", "RTF"),
    "paper_step": ("beam5_decode_seconds", "s"),
    "speechbrain_samu": ("audio_sec_per_sec", "audio s/s"),
    "scaling": ("largest_size_seconds_per_update", "s/update, largest size"),
}
# The extra side shown in the "as usually run" column: the earlier, not same-work reference
EXTRA_SIDES = ("reference_notebook", "reference_recipe_fp32")


def _figure(side: dict[str, Any], key: str) -> str:
    value = side.get(key)
    if not side.get("available", True) or value is None:
        return "unavailable"
    return f"{value:.4g}"


def row(record: dict[str, Any]) -> str:
    """One markdown table row of a benchmark record."""
    name = record["benchmark"]
    if "error" in record:
        return f"| {name} | failed: {record['error']} | | | | | |"
    key, unit = FIGURES.get(name, (record.get("headline", ""), ""))
    ours, ref = _figure(record["ours"], key), _figure(record["reference"], key)
    extra = next((record[k] for k in EXTRA_SIDES if k in record), None)
    usual = _figure(extra, key) if extra is not None else "-"
    # three decimals: a ratio of 1.496 must not read as a met 1.5x target
    ratios = ", ".join(f"{k} {v:.3f}x" for k, v in record.get("ratios", {}).items() if v) or "-"
    target = record.get("target")
    if isinstance(target, dict) and "met" in target:
        ratios += "; target " + ("met" if target["met"] else "NOT met")
    m = record["machine"]
    machine = f"{m['cpu_model']}, {m['cores']} cores, torch {m['torch']}, {m['device']}"
    load = m.get("loadavg_start", [None])[0]
    when = record["date"][:16].replace("T", " ") + (f" (load {load:.1f})" if load else "")
    return f"| {name} ({unit}) | {ours} | {ref} | {usual} | {ratios} | {machine} | {when} |"


def table(path: Path) -> str:
    """A markdown table (benchmark, ours, same-work reference, the reference as usually run,
    ratios, machine, date) of a JSONL file; the last record of each benchmark wins."""
    records: dict[str, dict[str, Any]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            records[record["benchmark"]] = record
    head = (
        "| benchmark | samu-st | same-work reference | as usually run (notebook / recipe) "
        "| ratios (above 1: samu-st better) | machine | date |"
    )
    rule = "| --- | ---: | ---: | ---: | --- | --- | --- |"
    return "\n".join([head, rule, *(row(r) for r in records.values())])
