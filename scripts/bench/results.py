"""The run's record (one per device, JSON-serialisable): sections per config, isolated stages whose
failures are recorded and never raised, and the report written after every section."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from .report import render_markdown
from .timing import START, Budget, Stat, fmt_time, log


@dataclass
class Run:
    """Everything this run measured (JSON-serialisable) and where to write it."""

    record: dict
    out: Optional[Path]
    json_path: Optional[Path]
    merge: list[Path]
    budget: Budget

    def section(self, config: str) -> dict:
        return self.record["configs"].setdefault(config, {"stages": {}, "notes": [], "errors": [], "skipped": []})

    def stage(self, config: str, name: str, fn: Callable[[], Any], need_seconds: float = 0.0) -> Any:
        """Run one stage: skipped when the budget is short, errors recorded and printed, never raised."""
        sec = self.section(config)
        if not self.budget.allows(need_seconds):
            sec["skipped"].append(name)
            log(f"[{config}] SKIPPED {name} (time budget: {self.budget.left():.0f}s left)")
            return None
        log(f"[{config}] {name} ...")
        try:
            return fn()
        except Exception as err:  # one failed stage must not stop the others
            summary = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:400]
            sec["errors"].append(f"{name}: {summary}")
            log(f"[{config}] ERROR in {name}: {summary}")
            traceback.print_exc(limit=4, file=sys.stdout)
            if isinstance(err, getattr(torch, "OutOfMemoryError", ())) or "out of memory" in str(err).lower():
                torch.cuda.empty_cache()
            return None
        finally:
            sys.stdout.flush()

    def put(self, config: str, name: str, stat: Optional[Stat], note: str = "") -> None:
        if stat is None:
            return
        self.section(config)["stages"][name] = {**dataclasses.asdict(stat), "note": note}
        log(f"[{config}] {name}: median {fmt_time(stat.median)} (min {fmt_time(stat.min)}, "
            f"max {fmt_time(stat.max)}, n={stat.n}) {note}")

    def save(self) -> None:
        """Write the JSON (this record merged with the others) and the markdown."""
        self.record["wall_seconds"] = round(time.perf_counter() - START, 1)
        if self.out is None:
            return
        records = merge_records(self.merge + ([self.json_path] if self.json_path else []), self.record)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        if self.json_path is not None:
            self.json_path.write_text(json.dumps(records, indent=1, default=str) + "\n")
        self.out.write_text(render_markdown(records))


def merge_records(paths: list[Path], current: dict) -> list[dict]:
    """Records from earlier JSON files, one per device key, with ``current`` replacing its key."""
    by_key: dict[str, dict] = {}
    for path in paths:
        if path is not None and path.is_file():
            try:
                for rec in json.loads(path.read_text()):
                    by_key[rec["key"]] = rec
            except (OSError, ValueError, KeyError, TypeError) as err:
                log(f"could not read {path} to merge ({err}); it is left out")
    by_key[current["key"]] = current
    return sorted(by_key.values(), key=lambda r: (r["device"]["type"] != "cpu", r["key"]))
