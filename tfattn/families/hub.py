"""The TF-Hub family: a BERT preprocess + encoder pair (`--hub-preprocess`, `--hub-encoder`: URLs
or SavedModel folders, e.g. from `tfattn export-hub`), trained frozen for `--freeze-epochs`, then
fine-tuned (or frozen throughout with `--freeze`).
"""

from pathlib import Path

import numpy as np

from tfattn.data.pipelines import warn_about_texts
from tfattn.families.base import PRETRAINED_DEFAULTS, Phase, PretrainedEncoderFamily
from tfattn.models import HubEncoder, HubPreprocessor, preprocess_in_chunks

# TF-Hub encoders are read through their pooled_output unless --pooling says otherwise.
HUB_DEFAULTS = {"pooling": "pooled"}
# The TF-Hub frozen phase before fine-tuning (one epoch by default): a warm start for the head.
FROZEN_LEARNING_RATE = 1e-3
HUB_OPTIONS = ("hub_preprocess", "hub_encoder")


class HubFamily(PretrainedEncoderFamily):
    """A TF-Hub BERT preprocess + encoder pair (URLs or SavedModel folders, e.g. `tfattn export-hub`)."""

    name = "hub"
    defaults = {**PRETRAINED_DEFAULTS, **HUB_DEFAULTS}
    field_help = {
        "hub_preprocess": "a TF-Hub BERT preprocess model: URL or SavedModel folder (see export-hub)",
        "hub_encoder": "the matching TF-Hub BERT encoder: URL or SavedModel folder",
        "freeze_epochs": "TF-Hub models: epochs on a frozen encoder before fine-tuning (default 1)",
    }
    # A SavedModel restored under a strategy cannot run its functions in cross-replica context.
    builds_in_replica_context = True

    @classmethod
    def chosen_by(cls, config):
        return bool(config.hub_encoder)

    @classmethod
    def check_config(cls, config):
        if not config.hub_preprocess:
            raise incomplete_pair()
        if config.backbone:
            raise ValueError("choose one pretrained model: a backbone or a TF-Hub pair, not both")

    @classmethod
    def refuse_options(cls, config):
        if config.hub_preprocess:  # without hub_encoder, which would choose this family
            raise incomplete_pair()
        if config.freeze_epochs:
            raise ValueError("freeze_epochs (--freeze-epochs) applies to TF-Hub models; use --freeze for a backbone")

    @classmethod
    def resolve_values(cls, config, values):
        values = super().resolve_values(config, values)
        values["freeze_epochs"] = 1 if config.freeze_epochs is None else config.freeze_epochs
        # A folder given relative to the working directory is saved absolute, so the run loads
        # from anywhere (URLs stay as they are).
        for option in HUB_OPTIONS:
            handle = getattr(config, option)
            if "://" not in handle and Path(handle).expanduser().exists():
                values[option] = str(Path(handle).expanduser().resolve())
        return values

    @classmethod
    def describe(cls, config):
        return f"TF-Hub {config.hub_encoder}"

    def check(self):
        from tfattn.models.hub import resolve_hub_handle

        resolve_hub_handle(self.config.hub_preprocess, "preprocess model")
        resolve_hub_handle(self.config.hub_encoder, "encoder")

    def prepare(self, train_texts, run_dir):
        self.preprocessor = HubPreprocessor(self.config.hub_preprocess)

    def encode_texts(self, texts, what):
        features = preprocess_in_chunks(self.preprocessor, texts)
        lengths = features["input_mask"].row_lengths().numpy()
        # The preprocess model truncates by itself, so truncated texts cannot be counted here.
        warn_about_texts(len(lengths), empty=int(np.sum(lengths <= 2)), what=what, filler="[CLS] [SEP] only")
        return features

    def build_encoder(self):
        return HubEncoder(self.config.hub_encoder)

    def phases(self):
        c = self.config
        if c.freeze:
            return [Phase("frozen", c.epochs, c.learning_rate, trainable=False)]
        fine_tuned = Phase("fine-tuned", c.epochs, c.learning_rate, trainable=True)
        if not c.freeze_epochs:
            return [fine_tuned]
        return [Phase("frozen", c.freeze_epochs, FROZEN_LEARNING_RATE, trainable=False), fine_tuned]


def incomplete_pair():
    """The error for a TF-Hub pair missing one of its two models."""
    return ValueError("a TF-Hub model needs both hub_preprocess and hub_encoder (--hub-preprocess, --hub-encoder)")
