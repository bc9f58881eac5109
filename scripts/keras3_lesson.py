"""The course's AG News lesson in Keras 3: `from tensorflow import keras` and tfattn's Keras 3 layers.

The lesson's way, step by step: `TextVectorization` learns a vocabulary from the training texts,
`TokenAndPositionEmbedding` and a `TransformerBlock` read the token ids (the embedding's padding
mask travels with them), `GlobalAveragePooling1D` averages the real tokens, a dense layer picks
one of the four topics, and `model.fit` trains with Adam and early stopping. The sizes are those of
`tfattn train agnews` from scratch (20,000 words, 64-wide, 2 heads, feed-forward 128, at most 256
tokens, batch 64), and the validation texts are its split of the same seed, so the two compare
(BENCHMARKS.md "Keras 3: the course's lesson"; `bench/keras3_lesson.py` runs both).

    python scripts/keras3_lesson.py --data ../shared/data/ag_news/train.csv [--seed 0] [--json OUT]
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tfattn.quiet import start_tensorflow  # noqa: E402

start_tensorflow()  # TensorFlow's start-up noise (CUDA probing on a CPU machine) filtered

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow import keras  # noqa: E402  (Keras 3 on TensorFlow 2.16+)

from tfattn.data.agnews import AGNEWS_LABELS, load_agnews  # noqa: E402
from tfattn.data.examples import split_examples  # noqa: E402
from tfattn.keras3.layers import TokenAndPositionEmbedding, TransformerBlock  # noqa: E402

VOCAB_SIZE, MAX_LENGTH, EMBED_DIM, NUM_HEADS, FF_DIM = 20000, 256, 64, 2, 128
BATCH_SIZE, EPOCHS, PATIENCE, LEARNING_RATE, DROPOUT = 64, 10, 2, 1e-3, 0.1


def build_model(vocabulary_size):
    """Token ids `[batch, length]` -> topic probabilities `[batch, 4]`."""
    return keras.Sequential(
        [
            keras.Input((None,), dtype="int32"),
            TokenAndPositionEmbedding(vocabulary_size, MAX_LENGTH, EMBED_DIM),
            TransformerBlock(EMBED_DIM, NUM_HEADS, FF_DIM, dropout=DROPOUT),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dropout(DROPOUT),
            keras.layers.Dense(len(AGNEWS_LABELS), activation="softmax"),
        ]
    )


def run(data, seed):
    """Trains the lesson's model on `data`'s seed-`seed` split; returns its validation figures."""
    keras.utils.set_random_seed(seed)
    train, validation = split_examples(load_agnews(data), seed=seed)
    vectorize = keras.layers.TextVectorization(max_tokens=VOCAB_SIZE)
    vectorize.adapt(tf.data.Dataset.from_tensor_slices(list(train.texts)).batch(256))

    def dataset(split, shuffle):
        texts_and_labels = tf.data.Dataset.from_tensor_slices((list(split.texts), np.asarray(split.labels)))
        if shuffle:
            texts_and_labels = texts_and_labels.shuffle(len(split.texts), seed=seed)
        # Each batch is padded to its longest text (id 0, masked), cut at MAX_LENGTH tokens.
        return texts_and_labels.batch(BATCH_SIZE).map(lambda t, y: (vectorize(t)[:, :MAX_LENGTH], y))

    model = build_model(vectorize.vocabulary_size())
    model.compile(
        optimizer=keras.optimizers.Adam(LEARNING_RATE), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    start = time.perf_counter()
    history = model.fit(
        dataset(train, shuffle=True),
        validation_data=dataset(validation, shuffle=False),
        epochs=EPOCHS,
        shuffle=False,  # (the dataset shuffles itself; Keras 3 warns about shuffle=True for datasets)
        callbacks=[keras.callbacks.EarlyStopping("val_accuracy", patience=PATIENCE, restore_best_weights=True)],
        verbose=2,
    )
    seconds = time.perf_counter() - start
    _, accuracy = model.evaluate(dataset(validation, shuffle=False), verbose=0)
    return {
        "seed": seed,
        "keras": keras.__version__,
        "validation_accuracy": round(float(accuracy), 4),
        "epochs_run": len(history.history["loss"]),
        "best_epoch": int(np.argmax(history.history["val_accuracy"])) + 1,
        "fit_seconds": round(seconds, 1),
        "training_texts": len(train.texts),
        "validation_texts": len(validation.texts),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="AG News train.csv")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the result here")
    args = parser.parse_args(argv)
    result = run(args.data, args.seed)
    print(
        f"Keras {result['keras']}, seed {args.seed}: validation accuracy {result['validation_accuracy']:.4f} "
        f"(best epoch {result['best_epoch']} of {result['epochs_run']}, {result['fit_seconds']} s)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
