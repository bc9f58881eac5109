"""The Hugging Face family: a pretrained BERT checkpoint (`--backbone`, a hub name or a local
folder), fine-tuned or, with `--freeze`, frozen under a trained head."""

from tfattn.families.base import PretrainedEncoderFamily
from tfattn.models import HuggingFaceEncoder


def checkpoint_tokenizer(name_or_path, max_length):
    """`(fast tokenizer, in-graph BertPreprocessor)` of a Hugging Face checkpoint, name or folder.
    A hub name fails here, in seconds offline, and a tokenizer the in-graph WordPiece cannot
    reproduce is refused: both before the run folder is touched."""
    from tfattn.models.wordpiece import bert_preprocessor_from_tokenizer
    from tfattn.pretrained import check_pretrained_source, load_tokenizer

    check_pretrained_source(name_or_path)
    tokenizer = load_tokenizer(name_or_path)
    return tokenizer, bert_preprocessor_from_tokenizer(tokenizer, max_length)


class PretrainedFamily(PretrainedEncoderFamily):
    """A Hugging Face BERT checkpoint (name or folder). Training texts are tokenized by its fast
    tokenizer; the saved model reads raw strings through the in-graph `BertPreprocessor`, which
    gives the same ids."""

    name = "huggingface"
    field_help = {
        "backbone": "a pretrained Hugging Face BERT: hub name or local checkpoint folder",
    }

    @classmethod
    def chosen_by(cls, config):
        # A TF-Hub pair named beside a backbone is the TF-Hub family's to refuse.
        return bool(config.backbone) and not config.hub_encoder

    @classmethod
    def describe(cls, config):
        return config.backbone + (" (frozen)" if config.freeze else "")

    def check(self):
        self.tokenizer, self.preprocessor = checkpoint_tokenizer(self.config.backbone, self.config.max_length)

    def prepare(self, train_texts, run_dir):
        """The preprocessor was built by `check`."""

    def encode_texts(self, texts, what):
        from tfattn.pretrained import tokenize_texts

        return tokenize_texts(self.tokenizer, texts, self.config.max_length, what=what)

    def encode_tagged(self, sentences, what):
        from tfattn.tagging import tokenize_and_align

        return tokenize_and_align(self.tokenizer, sentences, self.config.max_length, word_shapes=self.config.word_shape)

    def build_encoder(self):
        return HuggingFaceEncoder.from_pretrained(self.config.backbone)
