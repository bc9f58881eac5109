"""Datasets for the models: loaders of `TextExamples` (`TaggedSentences` for NER), and splits.

Data larger than memory streams through `tfattn.data.streaming` (not imported here: it needs
TensorFlow), which parses rows with the same per-row iterators as the loaders.
"""

from tfattn.data.agnews import AGNEWS_LABELS, clean_agnews_text, iter_agnews_rows, load_agnews, read_agnews_csv
from tfattn.data.conll import NER_LABELS, TaggedSentences, load_conll, read_conll
from tfattn.data.examples import DataError, TextExamples, split_examples, stratified_split
from tfattn.data.topics import (
    COURSE_TOPICS,
    MATH_TOPICS,
    iter_labelled_rows,
    load_label_map,
    load_math_topics,
    read_labelled_texts,
    save_label_map,
)

__all__ = [
    "DataError",
    "TextExamples",
    "stratified_split",
    "split_examples",
    "AGNEWS_LABELS",
    "clean_agnews_text",
    "iter_agnews_rows",
    "read_agnews_csv",
    "load_agnews",
    "MATH_TOPICS",
    "COURSE_TOPICS",
    "iter_labelled_rows",
    "read_labelled_texts",
    "load_math_topics",
    "save_label_map",
    "load_label_map",
    "NER_LABELS",
    "TaggedSentences",
    "read_conll",
    "load_conll",
]
