"""Datasets for the models: loaders of `TextExamples` (`TaggedSentences` for NER), and splits."""

from tfattn.data.agnews import AGNEWS_LABELS, clean_agnews_text, load_agnews, read_agnews_csv
from tfattn.data.conll import NER_LABELS, TaggedSentences, load_conll, read_conll
from tfattn.data.examples import DataError, TextExamples, split_examples, stratified_split
from tfattn.data.topics import (
    COURSE_TOPICS,
    MATH_TOPICS,
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
    "read_agnews_csv",
    "load_agnews",
    "MATH_TOPICS",
    "COURSE_TOPICS",
    "read_labelled_texts",
    "load_math_topics",
    "save_label_map",
    "load_label_map",
    "NER_LABELS",
    "TaggedSentences",
    "read_conll",
    "load_conll",
]
