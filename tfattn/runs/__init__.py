"""Run folders: what a run writes (`manifest`: run.json, locks, what --overwrite may replace) and how a
finished one is read back (`folders`)."""
