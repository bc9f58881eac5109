"""Datasets for the models: loaders of `TextExamples` (`TaggedSentences` for NER), and splits.

Data larger than memory streams through `tfattn.data.streaming` (not imported here: it needs
TensorFlow), which parses rows with the same per-row iterators as the loaders.
"""

# Each loader module's public names (its `__all__`) are the package's too, listed once, there.
from tfattn.data.agnews import *  # noqa: F403
from tfattn.data.agnews import __all__ as _agnews_names
from tfattn.data.conll import *  # noqa: F403
from tfattn.data.conll import __all__ as _conll_names
from tfattn.data.examples import DataError, TextExamples, split_examples, stratified_split
from tfattn.data.topics import *  # noqa: F403
from tfattn.data.topics import __all__ as _topics_names

# Not all of `tfattn.data.examples`: its UTF-8 readers serve the loaders, not the package's users.
__all__ = [
    "DataError",
    "TextExamples",
    "stratified_split",
    "split_examples",
    *_agnews_names,
    *_topics_names,
    *_conll_names,
]
