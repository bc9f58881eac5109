"""End-to-end tasks: each module loads its data, trains with `model.fit`, evaluates and saves a run."""
