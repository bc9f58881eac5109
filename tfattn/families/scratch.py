"""The from-scratch family: tfattn's transformer over a vocabulary learned from the training texts.

Words (`VocabularyPreprocessor`) or WordPiece sub-words (`BertPreprocessor`) per `--tokenizer`,
or with `--embeddings-from` a Hugging Face checkpoint's own WordPiece vocabulary and its token
embeddings (reduced by PCA) as the starting token table.
"""

import numpy as np

from tfattn.data.pipelines import warn_about_texts
from tfattn.families.base import Family
from tfattn.families.huggingface import checkpoint_tokenizer
from tfattn.models import TransformerEncoder, VocabularyPreprocessor, preprocess_in_chunks
from tfattn.models.wordpiece import BertPreprocessor, learn_wordpiece_vocabulary
from tfattn.training.callbacks import is_resuming

SCRATCH_DEFAULTS = {
    "max_length": 256,
    "batch_size": 64,
    "epochs": 10,
    "learning_rate": 1e-3,
    "pooling": "mean",
    "tokenizer": "words",
    "token_dropout": 0.0,
    "bigram_buckets": 0,
    "word_shape": False,
    "dropout": 0.1,
    "patience": 2,
}
# The options only the from-scratch model reads.
SCRATCH_OPTIONS = ("tokenizer", "embeddings_from", "token_dropout", "bigram_buckets")


class ScratchFamily(Family):
    """The from-scratch transformer over a vocabulary learned from the training texts: whole
    words (`VocabularyPreprocessor`) or WordPiece sub-words (`BertPreprocessor`), per `tokenizer`."""

    name = "scratch"
    defaults = SCRATCH_DEFAULTS
    field_help = {
        "tokenizer": "from scratch: words, or wordpiece (sub-words learned from the training texts); default: "
        "the task's (math wordpiece, else words)",
        "token_dropout": "from scratch: rate of whole input tokens dropped in training; default: the task's "
        "(math 0.1, else 0)",
        "bigram_buckets": "from scratch: rows of hashed bigram embeddings added to the token embeddings "
        "(fastText-style; 0: none); default: the task's (math 65536, else 0)",
        "embeddings_from": "from scratch: initialise the token table from this Hugging Face BERT's word-piece "
        "embeddings (name or folder; PCA to --embed-dim) and read text with its vocabulary",
    }

    @classmethod
    def chosen_by(cls, config):
        return not (config.backbone or config.hub_encoder)

    @classmethod
    def check_config(cls, config):
        if config.embeddings_from and config.tokenizer == "words":
            raise ValueError(
                "--embeddings-from reads text with the checkpoint's WordPiece vocabulary; drop --tokenizer words"
            )

    @classmethod
    def refuse_options(cls, config):
        for option in SCRATCH_OPTIONS:
            if getattr(config, option) is not None:
                raise ValueError(
                    f"--{option.replace('_', '-')} applies to the from-scratch model, not to a pretrained one"
                )

    @classmethod
    def defaults_for(cls, config, task):
        # The task's from-scratch defaults (math: WordPiece, token dropout, ...) come after its
        # defaults for every family; a from-scratch run has no frozen defaults to follow them.
        defaults = {**super().defaults_for(config, task), **task.scratch_defaults}
        if config.embeddings_from:
            defaults["tokenizer"] = "wordpiece"  # the checkpoint's own vocabulary
        return defaults

    @classmethod
    def describe(cls, config):
        return "from-scratch transformer"

    def check(self):
        c = self.config
        if c.embeddings_from:
            from tfattn.pretrained import pretrained_word_embeddings

            _, self.preprocessor = checkpoint_tokenizer(c.embeddings_from, c.max_length)
            self.pretrained_embeddings = pretrained_word_embeddings(c.embeddings_from)
            width = self.pretrained_embeddings.shape[1]
            if c.embed_dim > width:
                raise ValueError(
                    f"--embed-dim {c.embed_dim} is wider than the embeddings of {c.embeddings_from} ({width}); "
                    f"choose at most {width}"
                )

    def prepare(self, train_texts, run_dir):
        c = self.config
        vocab_path = run_dir / "vocab.txt"
        if not c.embeddings_from:  # with it, `check` built the checkpoint's preprocessor
            # A resumed run must reuse the vocabulary its checkpoint was trained with.
            resumed = is_resuming(run_dir) and vocab_path.exists()
            saved = vocab_path.read_text(encoding="utf-8").split("\n") if resumed else None
            self.preprocessor = self._learned_preprocessor(train_texts, saved)
        tokens = self.preprocessor.words if c.tokenizer == "words" else self.preprocessor.vocabulary
        vocab_path.write_text("\n".join(tokens), encoding="utf-8")

    def _learned_preprocessor(self, train_texts, saved):
        """The preprocessor over `saved` tokens (a resumed run's vocab.txt) or, without them, over
        a vocabulary learned from `train_texts`."""
        c = self.config
        if c.tokenizer == "wordpiece":
            tokens = saved or learn_wordpiece_vocabulary(train_texts, c.vocab_size)
            return BertPreprocessor(vocabulary=tokens, max_length=c.max_length)
        if saved:
            return VocabularyPreprocessor(saved, c.max_length)
        return VocabularyPreprocessor.adapt(train_texts, c.vocab_size, c.max_length)

    def initialize(self, model):
        if self.config.embeddings_from:
            from tfattn.pretrained import reduce_embeddings

            table = reduce_embeddings(self.pretrained_embeddings, self.config.embed_dim)
            model.encoder.embedding.token_embeddings.assign(table)

    def encode_texts(self, texts, what):
        # One pass: the tokens per text (before truncation) are counted on the way.
        token_counts = []

        def preprocess(chunk):
            token_ids = self.preprocessor.tokenize(chunk)
            token_counts.append(token_ids.row_lengths().numpy())
            return self.preprocessor.pack([token_ids])

        features = preprocess_in_chunks(preprocess, texts)
        lengths = np.concatenate(token_counts or [np.zeros(0, np.int64)])
        max_length = self.config.max_length
        # WordPiece rows also hold [CLS] and [SEP]; an empty text is those two alone.
        wordpiece = self.config.tokenizer == "wordpiece"
        room, filler = (max_length - 2, "[CLS] [SEP]") if wordpiece else (max_length, "[UNK]")
        warn_about_texts(
            len(texts), int(np.sum(lengths > room)), int(np.sum(lengths == 0)), max_length, what, filler=filler
        )
        return features

    def build_encoder(self):
        c = self.config
        return TransformerEncoder(
            vocab_size=len(self.preprocessor.vocabulary),
            max_length=c.max_length,
            embed_dim=c.embed_dim,
            num_heads=c.num_heads,
            ff_dim=c.ff_dim,
            num_blocks=c.num_blocks,
            dropout=c.dropout,
            positional=c.positional,
            token_dropout=c.token_dropout,
            bigram_buckets=c.bigram_buckets,
        )
