"""The model families of the translation task: tfattn's transformer and RNN translators, each with
its defaults, its own options and their help, its checks and how it is built; and the Hugging
Face TF encoder-decoders that `tfattn translate --model` serves.

`TranslationConfig.resolve` asks the family `--model` names (`TRANSLATOR_FAMILIES`) for its
defaults and refuses another family's options; `TranslationTask.fit` asks it to build the model.
"""


class TranslatorFamily:
    """One kind of translator of `tfattn.models.translation`.

    Class attributes:
        name: the `--model` word.
        options: the config fields only this family reads (the others refuse them).
        defaults: the value of each option left at None: the course's sizes and a learning rate
            per model, not tuned (BENCHMARKS.md "Translation" measures them, once, on the
            validation pairs).
        option_help: what each of `options` means (its default is added from `defaults`).
    """

    name = ""
    options = ()
    defaults = {}
    option_help = {}

    @classmethod
    def model_class(cls):
        from tfattn.models.translation import TRANSLATORS

        return TRANSLATORS[cls.name]

    @classmethod
    def field_help(cls):
        """`--help` of this family's options, each stating the default the code fills in."""
        return {name: f"{cls.name}: {text} (default {cls.defaults[name]})" for name, text in cls.option_help.items()}

    @classmethod
    def refuse_options(cls, config):
        """ValueError for an option of this family set on a config of another one."""
        for option in cls.options:
            if getattr(config, option) is not None:
                raise ValueError(f"--{option.replace('_', '-')} applies to --model {cls.name}, not {config.model}")

    @classmethod
    def build(cls, preprocessor, config):
        """The translator of a resolved `config`, its variables built."""
        from tfattn.models.translation import build_sample

        names = ("embed_dim", "dropout") + cls.options
        return build_sample(cls.model_class()(preprocessor, **{name: getattr(config, name) for name in names}))


class TransformerFamily(TranslatorFamily):
    name = "transformer"
    options = ("num_heads", "ff_dim", "num_blocks")
    defaults = {"embed_dim": 256, "num_heads": 4, "ff_dim": 1024, "num_blocks": 2, "learning_rate": 1e-3}
    option_help = {
        "num_heads": "attention heads",
        "ff_dim": "feed-forward size",
        "num_blocks": "blocks in the encoder and in the decoder",
    }


class RnnFamily(TranslatorFamily):
    name = "rnn"
    options = ("units",)
    defaults = {"embed_dim": 256, "units": 256, "learning_rate": 3e-3}
    option_help = {"units": "GRU and attention size"}


TRANSLATOR_FAMILIES = {family.name: family for family in (TransformerFamily, RnnFamily)}


def translation_field_help():
    """The `--help` lines the translator families own: their options, and the defaults that
    differ per family (embedding size, learning rate)."""
    families = TRANSLATOR_FAMILIES.values()
    embed_dims = sorted({family.defaults["embed_dim"] for family in families})
    rates = ", ".join(f"{_short(family.defaults['learning_rate'])} {family.name}" for family in families)
    owned = {name: text for family in families for name, text in family.field_help().items()}
    return {
        **owned,
        "embed_dim": f"embedding size (default {', '.join(map(str, embed_dims))})",
        "learning_rate": f"peak AdamW learning rate (default {rates})",
    }


def _short(rate):
    """A learning rate as the help writes it: 1e-3, 3e-3."""
    mantissa, exponent = f"{rate:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def pretrained_translator(name_or_folder):
    """A Hugging Face TF encoder-decoder (`TFAutoModelForSeq2SeqLM`: hub name or local folder)
    behind tfattn's decoding (`tfattn.models.hf_seq2seq.HuggingFaceSeq2Seq`)."""
    from tfattn.models.hf_seq2seq import HuggingFaceSeq2Seq

    return HuggingFaceSeq2Seq.from_pretrained(name_or_folder)
