"""SavedModels that serve raw strings: one serving module per kind of model (`classifiers`:
text and token classifiers; `translators`), written through `tfattn.files.write_export`."""
