#!/usr/bin/env python3
"""Per-operation figures of a schemathesis NDJSON report: generated cases per phase, answers by
status class, and failed checks. Usage: schemathesis_summary.py REPORT.ndjson..."""
import collections
import json
import sys

cases = collections.defaultdict(collections.Counter)
statuses = collections.defaultdict(collections.Counter)
failed = collections.defaultdict(collections.Counter)
for path in sys.argv[1:]:
    with open(path) as f:
        for line in f:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue  # the last line of a report still being written
            done = event.get("ScenarioFinished")
            if not done:
                continue
            rec = done["recorder"]
            label = rec["label"]
            cases[label][done["phase"]] += len(rec.get("cases", {}))
            for interaction in rec.get("interactions", {}).values():
                response = interaction.get("response") or {}
                code = response.get("status_code")
                statuses[label][f"{code // 100}xx" if code else "none"] += 1
            for checks in rec.get("checks", {}).values():
                for check in checks:
                    if check["status"] == "failure":
                        failed[label][check["name"]] += 1

phases = sorted({p for c in cases.values() for p in c})
print(f"{'operation':55} " + " ".join(f"{p:>9}" for p in phases) + "  answers / failed checks")
for label in sorted(cases):
    counts = " ".join(f"{cases[label][p]:>9}" for p in phases)
    answers = ", ".join(f"{k} {v}" for k, v in sorted(statuses[label].items()))
    fails = ", ".join(f"{k} {v}" for k, v in failed[label].items()) or "none"
    print(f"{label:55} {counts}  {answers} / {fails}")
total = sum(sum(c.values()) for c in cases.values())
fives = sum(s["5xx"] for s in statuses.values())
print(f"{len(cases)} operations, {total} cases, {fives} answers 5xx, "
      f"{sum(sum(f.values()) for f in failed.values())} failed checks")
