"""Named-entity recognition around sub-word tokenizers: labels, predictions, entities, scores.

The data side of token classification with a Hugging Face *fast* tokenizer:

- `tokenize_and_align` turns word-tagged `TaggedSentences` into sub-token features and labels
  (`align_labels`: a word's first sub-token keeps its tag, later ones get the I- form,
  special tokens get `IGNORE_INDEX`, which losses skip), and on request each sub-token's
  casing in the raw words (`word_shape_ids`, the feature an uncased model cannot see).
- `text_shape_ids` gives the same casing ids in the TensorFlow graph, from raw texts and the
  character offsets of `BertPreprocessor.encode_with_offsets`, for serving.
- `word_predictions` maps sub-token predictions back to one label per word (first sub-token).
- `entity_scores` / `format_entity_report`: entity-level precision, recall and F1 (seqeval,
  conlleval semantics) per type and overall, plus token accuracy.
- `group_entities` merges the per-sub-token label probabilities of a raw text into entity
  spans with character offsets, with the `aggregation_strategy` of Hugging Face's
  token-classification pipeline: "simple" (token level: a word may be split between
  entities) or the word-level "first", "average" and "max" (entities cover whole words).

Label ids index a list of names such as `tfattn.data.conll.NER_LABELS` ("O" first, then B-X/I-X).
"""

import warnings

import numpy as np
import tensorflow as tf

from tfattn.data.conll import TaggedSentences
from tfattn.pretrained import HF_FEATURE_NAMES

__all__ = [
    "IGNORE_INDEX",
    "SHAPE_FEATURE",
    "WORD_SHAPES",
    "align_labels",
    "offset_pieces",
    "text_shape_ids",
    "word_shape_ids",
    "tokenize_and_align",
    "word_predictions",
    "entity_scores",
    "format_entity_report",
    "group_entities",
    "AGGREGATION_STRATEGIES",
]

# The label of positions a loss must skip: the convention of HF models and our masked losses.
IGNORE_INDEX = -100
OUTSIDE = "O"
# Hugging Face's names; "none" (ungrouped tokens) is left out: it returns no entity spans.
AGGREGATION_STRATEGIES = ("simple", "first", "average", "max")
# The casing classes of `word_shape_ids`, in id order; "none" is the empty string (special
# tokens, padding), so a padded batch of ids reads as no shape where there is no token.
WORD_SHAPES = ("none", "lower", "title", "upper", "mixed", "digits", "other")
# The model feature holding each sub-token's `WORD_SHAPES` id.
SHAPE_FEATURE = "input_shape_ids"
_SHAPE_ID = {name: index for index, name in enumerate(WORD_SHAPES)}
# RE2 patterns over whole strings; (?s): a newline is just another character.
_HAS_LETTER = r"(?s).*\p{L}.*"
_HAS_UPPER = r"(?s).*\p{Lu}.*"
_HAS_DIGIT = r"(?s).*\p{N}.*"
_TITLE = r"(?s)\p{Lu}\P{Lu}*"
# Two uppercase letters or more, and no letter of another kind.
_UPPER = r"(?s)\P{L}*\p{Lu}\P{L}*\p{Lu}(?:\P{L}|\p{Lu})*"


def word_shape_ids(pieces) -> tf.Tensor:
    """The casing class of each string, as int32 ids into `WORD_SHAPES`, shaped like `pieces`.

    `pieces` is a string tensor (any shape, or a RaggedTensor) of raw characters, normally one
    sub-token's characters in the original text. The classes, by Unicode category:

    - "none": the empty string (special tokens and padding have no characters);
    - with a letter: "lower" if no letter is uppercase (caseless scripts count as lower),
      "title" if the first character is uppercase and no other one is (a lone "A" too),
      "upper" for two letters or more, all uppercase, else "mixed" ("iPhone", "McD");
    - without a letter: "digits" if a digit is present ("1996", "3.5"), else "other" ("-").

    Training (`tokenize_and_align`) and serving (`text_shape_ids`) both call this, so the two
    cannot disagree on a class.

    Example:
    >>> ids = word_shape_ids(tf.constant(["", "paris", "Élan", "EU", "iPhone", "1996", "-"]))
    >>> [WORD_SHAPES[i] for i in ids.numpy()]
    ['none', 'lower', 'title', 'upper', 'mixed', 'digits', 'other']
    """
    if isinstance(pieces, tf.RaggedTensor):
        return tf.ragged.map_flat_values(word_shape_ids, pieces)
    pieces = tf.convert_to_tensor(pieces, tf.string)

    def matches(pattern):
        return tf.strings.regex_full_match(pieces, pattern)

    has_letter = matches(_HAS_LETTER)
    # Each class below overrides the ones before it, so the most specific one wins.
    ids = tf.where(matches(_HAS_DIGIT), _SHAPE_ID["digits"], _SHAPE_ID["other"])
    ids = tf.where(has_letter, _SHAPE_ID["mixed"], ids)
    ids = tf.where(has_letter & ~matches(_HAS_UPPER), _SHAPE_ID["lower"], ids)
    ids = tf.where(matches(_TITLE), _SHAPE_ID["title"], ids)
    ids = tf.where(matches(_UPPER), _SHAPE_ID["upper"], ids)
    return tf.where(tf.equal(pieces, ""), _SHAPE_ID["none"], ids)


def offset_pieces(texts, offsets) -> tf.Tensor:
    """Each token's characters in its raw text: strings `[batch, seq]`, "" for empty spans.

    Args:
        texts: strings `[batch]`, the texts given to `BertPreprocessor.encode_with_offsets`.
        offsets: its `offsets`, `[batch, seq, 2]` (start, end) in characters of each text.

    Invalid UTF-8 is repaired first exactly as `encode_with_offsets` repairs it, since its
    offsets count the characters of the repaired text.
    """
    texts = tf.convert_to_tensor(texts, tf.string)
    texts = tf.strings.unicode_transcode(texts, "UTF-8", "UTF-8", errors="replace", replacement_char=0xFFFD)
    offsets = tf.convert_to_tensor(offsets)
    starts, ends = offsets[..., 0], offsets[..., 1]
    rows = tf.broadcast_to(texts[:, None], tf.shape(starts))
    return tf.strings.substr(rows, starts, ends - starts, unit="UTF8_CHAR")


def text_shape_ids(texts, offsets) -> tf.Tensor:
    """`word_shape_ids` of each token of raw texts (`offset_pieces`): int32 `[batch, seq]`."""
    return word_shape_ids(offset_pieces(texts, offsets))


def align_labels(word_ids, word_tags, label_names) -> list[int]:
    """Sub-token labels from word labels, given the tokenizer's `word_ids()` for a sentence.

    The first sub-token of a word carries the word's tag; the following sub-tokens of the
    same word carry its I- form (B-X becomes I-X; O and I-X stay as they are), so every
    sub-token of an entity word is trained as part of the entity. Special tokens (word id
    None) get `IGNORE_INDEX`. Words with no sub-token (cut off by truncation) simply get no
    label here; `word_predictions` gives them "O".
    """
    return _align(word_ids, word_tags, _continuation_ids(label_names))


def tokenize_and_align(tokenizer, sentences: TaggedSentences, max_length: int = 128, word_shapes: bool = False) -> dict:
    """Tokenize word-split sentences in one batched call and align their tags to sub-tokens.

    `tokenizer` must be a Hugging Face fast tokenizer (only those know each sub-token's word).
    Sentences are truncated to `max_length` sub-tokens, special tokens included, and not
    padded. Returns a dict of per-sentence Python lists, ready for ragged tensors:
    `input_ids`, `attention_mask` (and `token_type_ids` when the tokenizer makes them),
    `labels` (per sub-token, `IGNORE_INDEX` for special tokens), `word_ids` (per sub-token,
    None for special tokens), `num_words` (the sentence's word count, for
    `word_predictions`) and, with `word_shapes`, `SHAPE_FEATURE` (`input_shape_ids`: per
    sub-token, the `word_shape_ids` of its own characters in its word, "none" for special
    tokens); plus two counts of words that got no sub-token at all:

    - `truncated_words`: words cut off because their sentence reached `max_length`,
    - `empty_words`: words the tokenizer reduced to nothing (e.g. a lone zero-width space).

    Such words have no label to train on and are predicted as "O", which costs recall when
    they belong to an entity; a warning says how many there are, so raise `max_length` (or
    split long sentences) if truncation shows up.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"tokenize_and_align needs a fast (Rust) tokenizer for word ids; got "
            f"{type(tokenizer).__name__} (load it with use_fast=True)"
        )
    continuation_ids = _continuation_ids(sentences.label_names)
    result = {"input_ids": [], "attention_mask": [], "labels": [], "word_ids": [], "num_words": []}
    truncated_words = empty_words = truncated_sentences = 0
    # The tokenizer would read an empty batch as one empty sentence, so none skips it.
    if len(sentences):
        encoded = tokenizer(
            sentences.words,
            is_split_into_words=True,
            truncation=True,
            max_length=max_length,
            # Offsets of pre-split words are relative to each word.
            return_offsets_mapping=word_shapes,
        )
        result.update({name: encoded[name] for name in HF_FEATURE_NAMES.values() if name in encoded})
        for index, (words, tags) in enumerate(zip(sentences.words, sentences.tags)):
            word_ids = encoded.word_ids(index)
            covered = {word_id for word_id in word_ids if word_id is not None}
            last_covered = max(covered, default=-1)
            # Words after the last covered one were cut off only if the encoding is full;
            # otherwise (and for gaps before it) the tokenizer produced nothing for them.
            trailing = len(words) - 1 - last_covered
            if trailing and len(word_ids) >= max_length:
                truncated_words += trailing
                truncated_sentences += 1
                empty_words += (last_covered + 1) - len(covered)
            else:
                empty_words += len(words) - len(covered)
            result["labels"].append(_align(word_ids, tags, continuation_ids))
            result["word_ids"].append(word_ids)
            result["num_words"].append(len(words))
    if word_shapes:
        result[SHAPE_FEATURE] = _piece_shape_ids(sentences.words, encoded) if len(sentences) else []
    result.update(
        truncated_words=truncated_words,
        truncated_sentences=truncated_sentences,
        empty_words=empty_words,
    )
    lost = []
    if truncated_words:
        lost.append(
            f"{truncated_words} words in {truncated_sentences} sentences were cut off at max_length={max_length}"
        )
    if empty_words:
        lost.append(f"{empty_words} words tokenized to nothing")
    if lost:
        warnings.warn(
            f"{sentences.source}: {' and '.join(lost)}; these words get no training label and are predicted as 'O'",
            stacklevel=2,
        )
    return result


def _piece_shape_ids(sentence_words, encoded) -> list[list[int]]:
    """Per sentence, the `word_shape_ids` of each sub-token's characters in its word, from a
    batch encoding with word-relative `offset_mapping`: one TensorFlow call for all pieces."""
    pieces, lengths = [], []
    for index, words in enumerate(sentence_words):
        word_ids = encoded.word_ids(index)
        pieces += [
            "" if word_id is None else words[word_id][start:end]
            for word_id, (start, end) in zip(word_ids, encoded["offset_mapping"][index])
        ]
        lengths.append(len(word_ids))
    ids = word_shape_ids(tf.constant(pieces, tf.string)).numpy()
    return [row.tolist() for row in np.split(ids, np.cumsum(lengths)[:-1])]


def word_predictions(word_ids, token_predictions, num_words: int | None = None) -> list[int]:
    """One predicted label id per word: the prediction at the word's first sub-token.

    `token_predictions` holds a label id per sub-token (or scores `[tokens, labels]`, which
    are arg-maxed); it may be longer than `word_ids`, e.g. padded to the batch. Words with no
    sub-token (cut off by truncation, see `tokenize_and_align`) get label id 0, which is "O"
    in `NER_LABELS`. Give `num_words` (the sentence's word count) so that words cut off at the
    end are counted too; without it the result stops at the last word that has a sub-token.
    """
    predictions = np.asarray(token_predictions)
    if predictions.ndim == 2:
        predictions = predictions.argmax(axis=-1)
    if predictions.ndim != 1:
        raise ValueError(
            f"token_predictions must be ids [tokens] or scores [tokens, labels], got shape {predictions.shape}"
        )
    word_ids = list(word_ids)
    if len(predictions) < len(word_ids):
        raise ValueError(f"{len(predictions)} token predictions for {len(word_ids)} tokens")
    if num_words is None:
        num_words = 1 + max((word_id for word_id in word_ids if word_id is not None), default=-1)
    words = [0] * num_words
    previous = None
    for position, word_id in enumerate(word_ids):
        if word_id is not None and word_id != previous:
            if word_id >= num_words:
                raise ValueError(f"word id {word_id} at token {position}, but only {num_words} words")
            words[word_id] = int(predictions[position])
        previous = word_id
    return words


def entity_scores(true_word_tags, predicted_word_tags, label_names) -> dict:
    """Entity-level precision, recall and F1 (seqeval), per entity type and overall.

    Tags are per-sentence lists of label ids into `label_names`. An entity counts as found
    only if its type and exact word span match (conlleval semantics: an I-X after O or after
    another type starts an entity, as in IOB1 files). Returns
    `{"precision", "recall", "f1", "support" (true entities), "predicted" (predicted
    entities), "accuracy" (token accuracy), "per_type": {TYPE: {"precision", "recall", "f1",
    "support"}}}`, with every type named in `label_names` present (zeros when absent).
    """
    # Imported here: seqeval pulls in scikit-learn, which only scoring needs.
    from seqeval.metrics import (
        accuracy_score,
        classification_report,
        f1_score,
        precision_score,
        recall_score,
    )
    from seqeval.metrics.sequence_labeling import get_entities

    label_names = list(label_names)
    true_word_tags = list(true_word_tags)
    predicted_word_tags = list(predicted_word_tags)
    if len(true_word_tags) != len(predicted_word_tags):
        raise ValueError(f"{len(true_word_tags)} true sentences but {len(predicted_word_tags)} predicted")
    y_true, y_pred = [], []
    for index, (true_tags, predicted_tags) in enumerate(zip(true_word_tags, predicted_word_tags)):
        if len(true_tags) != len(predicted_tags):
            raise ValueError(f"sentence {index}: {len(true_tags)} true tags but {len(predicted_tags)} predicted")
        y_true.append(_names(true_tags, label_names, f"sentence {index}, true tags"))
        y_pred.append(_names(predicted_tags, label_names, f"sentence {index}, predicted tags"))

    true_count = len(get_entities(y_true))
    predicted_count = len(get_entities(y_pred))
    per_type = {
        entity_type: {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
        for entity_type in _entity_types(label_names)
    }
    # seqeval's report fails on data without a single entity; all zeros is the answer then.
    if true_count or predicted_count:
        report = classification_report(y_true, y_pred, output_dict=True, zero_division=0)
        for entity_type, row in report.items():
            if entity_type.endswith(" avg"):
                continue
            per_type[entity_type] = {
                "precision": float(row["precision"]),
                "recall": float(row["recall"]),
                "f1": float(row["f1-score"]),
                "support": int(row["support"]),
            }
        overall = {
            "precision": float(precision_score(y_true, y_pred, zero_division=0)),
            "recall": float(recall_score(y_true, y_pred, zero_division=0)),
            "f1": float(f1_score(y_true, y_pred, zero_division=0)),
        }
    else:
        overall = {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    return {
        **overall,
        "support": true_count,
        "predicted": predicted_count,
        "accuracy": float(accuracy_score(y_true, y_pred)) if any(y_true) else 0.0,
        "per_type": per_type,
    }


def format_entity_report(scores: dict) -> str:
    """`entity_scores` as a small text table: one row per type, then the overall scores."""
    lines = [f"{'type':<8} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8}"]

    def row(name, values):
        return (
            f"{name:<8} {values['precision']:>9.4f} {values['recall']:>9.4f} "
            f"{values['f1']:>9.4f} {values['support']:>8d}"
        )

    for entity_type, values in scores["per_type"].items():
        lines.append(row(entity_type, values))
    lines.append(row("overall", scores))
    lines.append(f"token accuracy {scores['accuracy']:.4f}")
    return "\n".join(lines)


def group_entities(
    text: str,
    offsets,
    probabilities,
    label_names,
    word_ids=None,
    aggregation_strategy: str = "simple",
) -> list[dict]:
    """Entity spans in `text` from per-sub-token label probabilities, as Hugging Face's
    `TokenClassificationPipeline` groups them.

    Args:
        text: the raw text the tokens come from.
        offsets: `[tokens, 2]` character spans of the tokens in `text` (the fast tokenizer's
            `offset_mapping`); tokens with an empty span, i.e. special tokens (0, 0) and
            padding, are skipped.
        probabilities: `[tokens, labels]`, each token's label probabilities (softmax).
        label_names: the labels, "O" and B-X/I-X (a bare "X" counts as I-X), in column order.
        word_ids: `[tokens]`, each token's word index (the encoding's `word_ids()`), None or
            -1 for tokens of no word, which are skipped. Needed by the word-level strategies.
        aggregation_strategy: how tokens become labelled units, as Hugging Face names it:

            - "simple": each token is a unit, labelled with its most probable label and scored
              with that probability; a word may be split between entities.
            - "first": each word is a unit with the label and score of its first sub-token.
            - "average": each word is a unit labelled by the argmax of its sub-tokens' mean
              probabilities, scored with that mean probability.
            - "max": each word is a unit with the label and score of its sub-token whose
              top probability is highest.

    Consecutive units labelled B-X/I-X of one type form an entity; a B-X, or an I-X after O or
    after another type, starts a new one. An entity spans from its first unit's start to its
    last unit's end (whole words for the word-level strategies) and scores the mean of its
    units' scores.

    Returns:
        `[{"entity_group": "PER", "score": mean unit score, "word": text[start:end],
        "start": ..., "end": ...}, ...]` in text order.

    Raises:
        ValueError: for an unknown strategy, a word-level strategy without `word_ids`, or
            inputs whose lengths or label counts disagree.
    """
    if aggregation_strategy not in AGGREGATION_STRATEGIES:
        raise ValueError(
            f"aggregation_strategy must be one of {', '.join(map(repr, AGGREGATION_STRATEGIES))}; "
            f"got {aggregation_strategy!r}"
        )
    word_level = aggregation_strategy != "simple"
    if word_level and word_ids is None:
        raise ValueError(
            f"aggregation_strategy={aggregation_strategy!r} groups sub-tokens by word: "
            "pass word_ids (the encoding's word_ids())"
        )
    label_names = list(label_names)
    offsets = [(int(start), int(end)) for start, end in offsets]
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or probabilities.shape[1] != len(label_names):
        raise ValueError(
            f"probabilities must be [tokens, labels] with {len(label_names)} labels, got shape {probabilities.shape}"
        )
    lengths = {len(offsets), len(probabilities)}
    if word_ids is not None:
        # None (Hugging Face's word_ids()) and negative ids (in-graph tensors) mean no word.
        word_ids = [None if word is None or int(word) < 0 else int(word) for word in word_ids]
        lengths.add(len(word_ids))
    if len(lengths) != 1:
        raise ValueError(f"offsets, probabilities (and word_ids) differ in length: {sorted(lengths)}")

    # Tokens to group: [(word, start, end, probability row)].
    tokens = []
    for position, (start, end) in enumerate(offsets):
        word = None if word_ids is None else word_ids[position]
        if end <= start or (word_ids is not None and word is None):
            continue
        tokens.append((word, start, end, probabilities[position]))

    # Units: (label id, score, start, end), either tokens or whole words.
    if word_level:
        words = []
        for word, start, end, row in tokens:
            if words and words[-1][0] == word:
                words[-1][2] = end
                words[-1][3].append(row)
            else:
                words.append([word, start, end, [row]])
        units = [(*_word_label(np.stack(rows), aggregation_strategy), start, end) for _, start, end, rows in words]
    else:
        units = [(int(row.argmax()), float(row.max()), start, end) for _, start, end, row in tokens]

    entities = []
    current = None  # [type, scores, start, end] of the entity being built
    for label_id, score, start, end in units:
        prefix, entity_type = _split_label(label_names[label_id])
        if entity_type is None:
            current = None
            continue
        if prefix == "B" or current is None or current[0] != entity_type:
            current = [entity_type, [], start, end]
            entities.append(current)
        current[1].append(score)
        current[3] = end
    return [
        {
            "entity_group": entity_type,
            "score": float(np.mean(scores)),
            "word": text[start:end],
            "start": start,
            "end": end,
        }
        for entity_type, scores, start, end in entities
    ]


def _word_label(rows, aggregation_strategy: str) -> tuple[int, float]:
    """(label id, score) of a word from its sub-tokens' probability rows `[pieces, labels]`."""
    if aggregation_strategy == "first":
        row = rows[0]
    elif aggregation_strategy == "average":
        row = rows.mean(axis=0)
    else:  # "max": the piece the model is surest of decides; the first one wins a tie.
        row = rows[rows.max(axis=1).argmax()]
    label_id = int(row.argmax())
    return label_id, float(row[label_id])


def _align(word_ids, word_tags, continuation_ids: list[int]) -> list[int]:
    """`align_labels` with the B-X to I-X map already built (it is the same for a dataset)."""
    labels = []
    previous = None
    for word_id in word_ids:
        if word_id is None:
            labels.append(IGNORE_INDEX)
        elif word_id == previous:
            labels.append(continuation_ids[word_tags[word_id]])
        else:
            if not 0 <= word_id < len(word_tags):
                raise ValueError(f"word id {word_id} but the sentence has {len(word_tags)} tags")
            labels.append(int(word_tags[word_id]))
        previous = word_id
    return labels


def _continuation_ids(label_names) -> list[int]:
    """For each label id, the id of later sub-tokens of the same word: B-X -> I-X, else same."""
    label_names = list(label_names)
    ids = {name: index for index, name in enumerate(label_names)}
    continuation = []
    for index, name in enumerate(label_names):
        if name.startswith("B-"):
            inside = "I-" + name[2:]
            if inside not in ids:
                raise ValueError(f"label {name!r} has no {inside!r} in the label names {label_names}")
            continuation.append(ids[inside])
        else:
            continuation.append(index)
    return continuation


def _names(label_ids, label_names: list[str], where: str) -> list[str]:
    """The names of `label_ids`; negative ids are refused, not counted from the end."""
    names = []
    for label_id in label_ids:
        if not 0 <= label_id < len(label_names):
            raise ValueError(f"{where}: label id {label_id} is outside 0..{len(label_names) - 1}")
        names.append(label_names[label_id])
    return names


def _split_label(name: str):
    """("B" or "I", entity type) of a tag, or (None, None) for "O"; a bare "X" is inside X."""
    if name == OUTSIDE:
        return None, None
    if name[:2] in ("B-", "I-"):
        return name[0], name[2:]
    return "I", name


def _entity_types(label_names) -> list[str]:
    """Entity types in the order the label names first mention them (PER, ORG, LOC, MISC)."""
    types = []
    for name in label_names:
        _, entity_type = _split_label(name)
        if entity_type is not None and entity_type not in types:
            types.append(entity_type)
    return types
