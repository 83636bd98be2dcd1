"""Fidelity of every precision artifact of every zoo model, read from the artifact manifests.

Build the artifacts first (minutes to an hour on 2 cores; the two RRDBNets dominate):

    pixelift export --all --precision all --coreml --json > zoo_export.jsonl
    python -m bench.zoo_precision [--out bench/results/zoo_precision.md]

Each cell is the worst PSNR (dB) over the held-out crops vs the fp32 artifact, as stored in
the target's manifest; ``auto`` columns are what ``--precision auto`` picks at each gate from
those measured rows. Timings here are per held-out crop (about 80 px) and only rank rows;
`python -m bench.precision` compares speed against ncnn at 256 px.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pixelift import models
from pixelift import precision as P
from pixelift.artifacts import MANIFEST, artifact_dir, find

COLUMNS = tuple(f"{c.key}@{c.target}" for c in P.CAPABILITIES if c.provider in P.CPU_PROVIDERS)


def collect(model_id: str) -> dict[str, Any]:
    row: dict[str, Any] = {"model": model_id, "cells": {}, "targets": {}}
    for target in P.TARGETS:
        if P.TARGETS[target].format == "coreml":  # validated structurally; fidelity needs macOS
            row["targets"][target] = (artifact_dir(model_id, target) / MANIFEST).is_file()
            continue
        art = find(model_id, target)
        row["targets"][target] = art is not None
        if art is None:
            continue
        for key, rec in art.manifest.fidelity.items():
            row["cells"][f"{key}@{target}"] = rec
        if "int8" in art.manifest:
            info = art.manifest["int8"]
            kept = info.get("chosen", {}).get("excluded") or info.get("kept_in_higher_precision") or []
            row[f"{target} kept fp"] = len(kept)
    measured = P.measured_rows(row["cells"])
    for gate in (P.HIGH_FIDELITY_DB, P.FAST_DB):
        if measured:
            best, _ = P.choose_auto(measured, gate)
            row[f"auto@{gate:g}"] = f"{best.capability.key}@{best.capability.target}"
    return row


def markdown(rows: list[dict[str, Any]]) -> str:
    cols = [c for c in COLUMNS if any(c in r["cells"] for r in rows)]
    head = ["model", *cols, "int8 convs kept (qdq / nncf)", "coreml", "auto@50", "auto@40"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = []
        for c in cols:
            rec = r["cells"].get(c)
            if rec is None:
                cells.append("–")
            elif not rec.finite:
                cells.append("NaN/Inf" if not rec.error else "error")
            else:
                cells.append(f"{rec.psnr_db}")
        kept = f"{r.get('onnx-int8 kept fp', '–')} / {r.get('openvino-int8 kept fp', '–')}"
        coreml = "yes" if r["targets"].get("coreml-fp16") else "no"
        lines.append(
            "| " + " | ".join([r["model"], *cells, kept, coreml, r.get("auto@50", "–"), r.get("auto@40", "–")]) + " |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("bench/results/zoo_precision.md"))
    a = ap.parse_args()
    rows = [collect(s.id) for s in models.all_specs() if find(s.id, "onnx-fp32") is not None]
    missing = {
        r["model"]: [t for t, ok in r["targets"].items() if not ok] for r in rows if not all(r["targets"].values())
    }
    text = markdown(rows)
    if missing:
        text += "\nMissing targets: " + json.dumps(missing) + "\n"
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(text)
    a.out.with_suffix(".json").write_text(
        json.dumps(rows, indent=1, default=lambda o: o.to_json() if hasattr(o, "to_json") else str(o))
    )
    print(text)


if __name__ == "__main__":
    main()
