"""The image-classification task (`tfattn train images`): a ViT or CNN from scratch, or a Hugging Face ViT/DeiT.

`--data` is a folder of `class/image` files, a tar of them (CIFAR-10's `train.tar`) or
`tfds:cifar10`; validation is `--validation-data`, or a stratified, seeded carve of
`--validation-fraction` of every class. Training augments each epoch's images in the data
pipeline (a random crop of the image padded by 4 pixels, and a random horizontal flip), drawn
from the run's seed and the epoch, so an interrupted run resumes to the uninterrupted result.
The run folder is every tfattn run's; `evaluate` reports accuracy, macro-F1 and the confusion
matrix, `predict` classifies image files, `attention` draws the class token's attention over
the image (`tfattn.explorer.images`), and `export` writes a SavedModel serving encoded images
(`tfattn.serving.images`).
"""

import itertools
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfattn.evaluation import classification_metrics, write_evaluation
from tfattn.layers.vision import PATCH_TOKENIZERS
from tfattn.runs.folders import LABEL_MAP_FILE
from tfattn.runs.manifest import MODEL_DIR
from tfattn.tasks.base import Task, numbered_path
from tfattn.tasks.config import FIELD_HELP, RunConfig, check_numeric_options

__all__ = ["ImageClassificationTask", "ImageConfig"]

# The from-scratch models' sizes (the fields left at None). The ViT's: 32x32 images to an 8x8 grid
# of tokens (patch size 4), 6 blocks of width 128, 4 heads: about 0.9M weights, a size that trains
# on CPUs. The tokens come from the convolutional tokenizer, not cut patches: on CIFAR-10 it was
# 8.6 points ahead of plain 4x4 patches at equal training time (BENCHMARKS.md, "The small-data
# options"); `--tokenizer patches` is the original ViT's.
VIT_DEFAULTS = {
    "patch_size": 4,
    "tokenizer": "conv",
    "embed_dim": 128,
    "num_heads": 4,
    "ff_dim": 256,
    "num_blocks": 6,
    "block_norm": "post",
    "self_attention": "full",
}
BLOCK_NORMS = ("post", "pre")  # TransformerBlock's normalize_first off and on
SELF_ATTENTIONS = ("full", "locality")  # TransformerBlock's locality off and on
CNN_DEFAULTS = {"cnn_width": 32}
MODELS = ("vit", "cnn")
# Defaults of the fields every family has: from scratch, and fine-tuning a pretrained checkpoint.
FAMILY_DEFAULTS = {
    # 20 epochs: a ViT epoch of CIFAR-10 takes 3.5 minutes on 2 cores of an AMD EPYC with AVX-512,
    # an estimated 6 on one without (its patch epochs took 4.7-6.0; BENCHMARKS.md), so 70 minutes
    # to about 2 hours.
    "scratch": {"batch_size": 128, "epochs": 20, "learning_rate": 1e-3, "weight_decay": 0.05, "patience": 5},
    "backbone": {"batch_size": 32, "epochs": 3, "learning_rate": 5e-5, "weight_decay": 0.01, "patience": 2},
}
CROP_PADDING = 4  # pixels of zeros around each training image before the random crop
PREDICT_BATCH = 256

IMAGE_HELP = {
    **FIELD_HELP,
    "data": "labelled images: a folder of CLASS/IMAGE files (.jpg, .jpeg, .png), a .tar of them (e.g. CIFAR-10's "
    "train.tar), or tfds:cifar10",
    "validation_data": "validation images, same forms (default: a stratified carve of --validation-fraction)",
    "limit": "train on this many images of the training split, a seeded sample (smoke tests)",
    "validation_limit": "score on this many validation images, a seeded sample",
    "model": "from scratch: vit (the Vision Transformer) or cnn (the small CNN baseline); default vit",
    "backbone": "fine-tune a Hugging Face TF ViT or DeiT image classifier (hub name or folder) instead",
    "image_size": "side in pixels images are read at (other sizes are resized; default 32)",
    "augment": "random crop (of the image padded by 4 pixels) and horizontal flip of training images (default on)",
    "batch_size": "default 128 from scratch, 32 with --backbone",
    "epochs": "default 20 from scratch (70 minutes to 2 hours for CIFAR-10's ViT on 2 CPU cores, by CPU), "
    "3 with --backbone",
    "learning_rate": "peak AdamW learning rate (default 1e-3 from scratch, 5e-5 with --backbone)",
    "weight_decay": "AdamW weight decay (default 0.05 from scratch, 0.01 with --backbone)",
    "patience": "epochs without a better validation accuracy before stopping (default 5, 2 with --backbone)",
    "dropout": "dropout in the ViT's blocks and before the head (default 0.1)",
    "label_smoothing": "share of each label's probability spread over all classes (default 0)",
    "max_length": "does not apply to images",
    "stream": "does not apply to images: they are read into memory (CIFAR-10's 50,000 take 150 MB)",
    **{
        name: f"ViT: {what} (default {VIT_DEFAULTS[name]})"
        for name, what in (
            ("patch_size", "side in pixels of a patch (conv: the image is halved log2 of it times)"),
            (
                "tokenizer",
                "conv (a convolutional tokenizer), patches (the original ViT's) or shifted (shifted patch "
                "tokenization)",
            ),
            ("embed_dim", "token vector size"),
            ("num_heads", "attention heads"),
            ("ff_dim", "feed-forward size"),
            ("num_blocks", "transformer blocks"),
            ("block_norm", "post (post-norm blocks) or pre (pre-norm, as the original ViT, with a final norm)"),
            ("self_attention", "full, or locality (no token attends to itself; a learned softmax temperature)"),
        )
    },
    "cnn_width": f"CNN: channels of its first stage (default {CNN_DEFAULTS['cnn_width']})",
}


@dataclass
class ImageConfig(RunConfig):
    """An image-classification run: the shared run fields (`RunConfig`) and the model's section;
    saved as the run's `config.json`. Fields left at None take the model's and family's defaults
    (`VIT_DEFAULTS`, `CNN_DEFAULTS`, `FAMILY_DEFAULTS`)."""

    task: str = "images"
    run_dir: str = "runs/images"
    model: str = "vit"
    backbone: str | None = None
    image_size: int = 32
    augment: bool = True
    patch_size: int | None = None
    tokenizer: str | None = None
    embed_dim: int | None = None
    num_heads: int | None = None
    ff_dim: int | None = None
    num_blocks: int | None = None
    block_norm: str | None = None
    self_attention: str | None = None
    cnn_width: int | None = None
    dropout: float = 0.1
    weight_decay: float | None = None

    @classmethod
    def field_help(cls):
        return IMAGE_HELP

    @staticmethod
    def field_choices():
        return {
            "model": MODELS,
            "tokenizer": PATCH_TOKENIZERS,
            "block_norm": BLOCK_NORMS,
            "self_attention": SELF_ATTENTIONS,
        }

    def resolve(self):
        """A checked copy with the defaults filled in; options that do not apply to the chosen
        model are refused in one line naming them."""
        if not self.data:
            raise ValueError("--data is required: a folder of CLASS/IMAGE files, a .tar of them, or tfds:cifar10")
        check_numeric_options(self)
        for option, value in (("max_length", self.max_length), ("stream", self.stream)):
            if value:
                raise ValueError(f"--{option.replace('_', '-')} does not apply to images")
        if self.model not in MODELS:
            raise ValueError(f"--model must be one of {', '.join(MODELS)}, got {self.model!r}")
        own = {"vit": VIT_DEFAULTS, "cnn": CNN_DEFAULTS}
        foreign = {**VIT_DEFAULTS, **CNN_DEFAULTS} if self.backbone else own["cnn" if self.model == "vit" else "vit"]
        for name in foreign:
            if getattr(self, name) is not None:
                what = "--backbone" if self.backbone else f"--model {self.model}"
                raise ValueError(f"--{name.replace('_', '-')} does not apply to {what}")
        defaults = {} if self.backbone else {n: v for n, v in own[self.model].items() if getattr(self, n) is None}
        family = FAMILY_DEFAULTS["backbone" if self.backbone else "scratch"]
        defaults.update({name: value for name, value in family.items() if getattr(self, name) is None})
        config = replace(self, **defaults)
        if config.model == "vit" and not config.backbone:
            for name, choices in (
                ("tokenizer", PATCH_TOKENIZERS),
                ("block_norm", BLOCK_NORMS),
                ("self_attention", SELF_ATTENTIONS),
            ):
                if getattr(config, name) not in choices:
                    flag = "--" + name.replace("_", "-")
                    raise ValueError(f"{flag} must be one of {', '.join(choices)}, got {getattr(config, name)!r}")
            size = config.patch_size
            if config.image_size % size:
                raise ValueError(f"--patch-size {size} must divide --image-size {config.image_size}")
            if config.tokenizer == "conv" and (size < 2 or size & (size - 1)):
                raise ValueError(
                    f"--tokenizer conv halves the image log2(--patch-size) times: --patch-size must be 2, 4, 8, ..., "
                    f"got {size}"
                )
            if config.tokenizer == "shifted" and size < 2:
                raise ValueError("--tokenizer shifted shifts by half a patch: --patch-size must be at least 2")
            if config.embed_dim % config.num_heads:
                raise ValueError(f"--embed-dim {config.embed_dim} must be a multiple of --num-heads {config.num_heads}")
        return config


def _sample(count, size, seed):
    """`size` of the indices 0..count-1 drawn by `seed`, in order."""
    return np.sort(np.random.default_rng(seed).permutation(count)[:size])


class ImageClassificationTask(Task):
    """Labelled images -> a classifier scored in accuracy and macro-F1 (`tfattn.models.vision`
    from scratch, `tfattn.models.hf_vision` fine-tuned)."""

    name = "images"
    summary = "Image classification: a Vision Transformer (or CNN) from scratch, or a Hugging Face ViT/DeiT"
    description = (
        "Image classification. --data: a folder of CLASS/IMAGE files (.jpg, .jpeg, .png), a .tar of them (CIFAR-10's "
        "train.tar) or tfds:cifar10; images are read at --image-size (others resized, grayscale made RGB). "
        "Validation: --validation-data, or a stratified, seeded carve of --validation-fraction. From scratch: "
        "--model vit (patches, a class token, tfattn's TransformerBlock) or cnn (the baseline); --backbone fine-tunes "
        "a Hugging Face ViT or DeiT. Training images are cropped at random (after padding by 4) and flipped. "
        "Classify files with 'tfattn predict --run RUN a.jpg', see the attention with 'tfattn attention'."
    )
    config_class = ImageConfig
    monitor = "val_accuracy"
    serve_help = "with an image run: label, probability and file of each image file"

    @classmethod
    def add_arguments(cls, command, parser):
        if command == "attention":
            from tfattn.tasks.encoder_task import add_page_arguments

            add_page_arguments(parser)

    # --- training
    def _read(self, spec, label_names=None):
        from tfattn.data.images import read_images

        return read_images(spec, self.config.image_size, label_names=label_names)

    def prepare_training(self):
        """The training and validation images, read and checked (and a backbone checked) before
        the run folder is touched."""
        if self.config.backbone:
            from tfattn.models.hf_vision import check_backbone

            check_backbone(self.config.backbone)
        return self._read_splits()

    def _read_splits(self):
        """The run's training and validation images, as training made them: `evaluate` calls
        this alone, since a finished run holds its model and needs no backbone."""
        from tfattn.data.images import split_images

        c = self.config
        images = self._read(c.data)
        if c.validation_data:
            train, validation = images, self._read(c.validation_data, label_names=images.label_names)
        else:
            train, validation = split_images(images, c.validation_fraction, c.seed)
        # Seeded samples, not the first images: the files come sorted by class.
        if c.limit:
            train = train.subset(_sample(len(train), c.limit, [c.seed, 0]))
        if c.validation_limit:
            validation = validation.subset(_sample(len(validation), c.validation_limit, [c.seed, 1]))
        return train, validation

    def data_sources(self):
        c = self.config
        return [spec for spec in (c.data, c.validation_data) if spec and not spec.startswith("tfds:")]

    def _build_model(self, train, strategy):
        c = self.config
        with strategy.scope():
            if c.backbone:
                from tfattn.models.hf_vision import HuggingFaceImageClassifier

                return HuggingFaceImageClassifier.from_pretrained(c.backbone, train.label_names)
            from tfattn.models.vision import ConvNet, ImagePreprocessor, VisionTransformer, build_image_model

            preprocessor = ImagePreprocessor.from_images(train.images, c.image_size)
            classes = len(train.label_names)
            if c.model == "cnn":
                model = ConvNet(classes, preprocessor, width=c.cnn_width, dropout=c.dropout)
            else:
                vit = {name: getattr(c, name) for name in VIT_DEFAULTS}
                vit["normalize_first"] = vit.pop("block_norm") == "pre"
                vit["locality"] = vit.pop("self_attention") == "locality"
                model = VisionTransformer(classes, preprocessor, dropout=c.dropout, **vit)
            return build_image_model(model)

    def fit(self, run_dir, prepared, strategy, callbacks=()):
        """Build the model in `strategy`'s scope, train it on augmented epochs, save it with its
        label names, and score the saved model on the validation images."""
        import tf_keras as keras

        from tfattn.runs.folders import finish_training, mark_trained, write_labels
        from tfattn.training.phases import compile_and_fit

        c = self.config
        train, validation = prepared
        classes = len(train.label_names)
        print(
            f"images: {len(train):,} training / {len(validation):,} validation images of {classes} classes, "
            f"{c.image_size}x{c.image_size}" + (" (augmented: crop and flip)" if c.augment else "")
        )
        model = self._build_model(train, strategy)
        print(f"{c.backbone or c.model.upper()}: {model.count_params():,} weights")
        if c.backbone and model.new_head:
            print(
                f"newly initialized (trained from scratch): the head, {classes} outputs on the class token's "
                "vector; every other weight is pretrained"
            )
        order = self._training_order(train)
        one_hot = tf.one_hot(validation.labels, classes)
        validation_data = tf.data.Dataset.from_tensor_slices((validation.images, one_hot)).batch(c.batch_size)
        compile_and_fit(
            model,
            order,
            run_dir,
            c,
            loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=c.label_smoothing),
            make_metrics=lambda: [keras.metrics.CategoricalAccuracy(name="accuracy")],
            monitor=self.monitor,
            examples_per_epoch=len(train),
            strategy=strategy,
            validation_data=validation_data,
            callbacks=callbacks,
            jit_compile=c.jit_compile,
        )
        mark_trained(run_dir)
        self._save(model, run_dir / MODEL_DIR)
        write_labels(run_dir, train.label_names)
        saved = self.load_model(run_dir)  # scored as evaluate, predict and export will load it
        report = self._report(saved, validation)
        write_evaluation(report, run_dir, "validation", config={"data": validation.source})
        summary = f"validation accuracy {report.accuracy:.4f}, macro-F1 {report.macro_f1:.4f}"
        print(summary)
        finish_training(run_dir, summary)
        return report

    def _training_order(self, train):
        """The `EpochOrder` of the training images: each epoch a new seeded order, and with
        `augment` each image cropped at a random place of itself padded by `CROP_PADDING` zeros,
        and flipped left-right half the time.

        Drawn in numpy from (seed, epoch), as the language model's blocks are: a resumed run
        replays the epochs it skips through `on_replay`, so it goes on with the uninterrupted
        run's draws.
        """
        from tfattn.training.phases import EpochOrder

        c = self.config
        count, size, classes = len(train), c.image_size, len(train.label_names)
        pad = CROP_PADDING if c.augment else 0
        padded = np.pad(train.images, [(0, 0), (pad, pad), (pad, pad), (0, 0)]) if pad else train.images
        labels = np.eye(classes, dtype=np.float32)[train.labels]
        window = np.arange(size)
        iterators = itertools.count()

        def epoch_batches():
            draw = np.random.default_rng([c.seed, next(iterators)])
            order = draw.permutation(count)
            tops, lefts = draw.integers(0, 2 * pad + 1, size=(2, count))
            flips = draw.random(count) < 0.5 if c.augment else np.zeros(count, bool)
            for first in range(0, count, c.batch_size):
                rows = order[first : first + c.batch_size]
                ys = (tops[rows, None] + window)[:, :, None]
                xs = (lefts[rows, None] + window)[:, None, :]
                batch = padded[rows[:, None, None], ys, xs]
                batch = np.where(flips[rows, None, None, None], batch[:, :, ::-1], batch)
                yield batch, labels[rows]

        output_signature = (
            tf.TensorSpec([None, size, size, 3], tf.uint8),
            tf.TensorSpec([None, classes], tf.float32),
        )
        data = tf.data.Dataset.from_generator(epoch_batches, output_signature=output_signature)
        return EpochOrder(data.prefetch(2), math.ceil(count / c.batch_size), on_replay=lambda: next(iterators))

    def _save(self, model, folder):
        if self.config.backbone:
            model.save(folder)
        else:
            from tfattn.models.vision import save_image_model

            save_image_model(model, folder)

    def _probabilities(self, model, images):
        batches = [
            tf.nn.softmax(tf.cast(model(images[start : start + PREDICT_BATCH], training=False), tf.float32)).numpy()
            for start in range(0, len(images), PREDICT_BATCH)
        ]
        return np.concatenate(batches) if batches else np.zeros([0, len(self.label_names)], np.float32)

    def _report(self, model, images):
        predicted = self._probabilities(model, images.images).argmax(axis=-1)
        return classification_metrics(images.labels, predicted, images.label_names)

    # --- a finished run
    def load_model(self, run_dir):
        from tfattn.data import load_label_map

        self.run_dir = Path(run_dir)
        self.label_names = load_label_map(self.run_dir / LABEL_MAP_FILE)
        if self.config.backbone:  # what `save_pretrained` wrote, read through the allow-list
            from tfattn.models.hf_vision import HuggingFaceImageClassifier

            return HuggingFaceImageClassifier.load(self.run_dir / MODEL_DIR)
        from tfattn.models.vision import load_image_model

        return load_image_model(self.run_dir / MODEL_DIR)

    def _read_files(self, paths):
        from tfattn.data.images import read_image_files

        return read_image_files(paths, self.config.image_size)

    def serve(self, model, texts, args):
        """`label<TAB>probability<TAB>file` for each image file."""
        probabilities = self._probabilities(model, self._read_files(texts))
        lines = []
        for path, row in zip(texts, probabilities):
            best = int(row.argmax())
            lines.append(f"{self.label_names[best]}\t{row[best]:.3f}\t{path}")
        return lines

    def evaluate(self, model, args):
        """Accuracy, macro-F1, per-class scores and the confusion matrix of `args.data` (default:
        the run's validation images)."""
        images = self._read(args.data, label_names=self.label_names) if args.data else self._read_splits()[1]
        images = replace(images, label_names=list(self.label_names))
        report = self._report(model, images)

        def write(run_dir, prefix):
            config = {"data": images.source, "run": str(run_dir)}
            return list(write_evaluation(report, run_dir, prefix=prefix, config=config).values())

        return report.format_text(), write

    def attention(self, model, texts, args):
        """For each image file, the explorer page (`--html`) and/or a PNG (`--out`) of the class
        token's attention over the image: raw per head, rollout, gradient-weighted, and the mean
        attention distance of every head."""
        from tfattn.explorer.images import explain_image, image_explorer_page, plot_image_attention

        if not model.has_attention:
            raise ValueError(f"{self.run_dir} is a CNN run: it has no attention to draw; train --model vit")
        png = args.out or (None if args.html else "attention.png")  # the page alone when only --html is given
        written = []
        for index, (path, pixels) in enumerate(zip(texts, self._read_files(texts))):
            if model.image_size != self.config.image_size:  # a pretrained checkpoint's own size (e.g. 224)
                from tfattn.data.images import resize_pixels

                pixels = resize_pixels(pixels[None], model.image_size)[0].numpy()
            explanation = explain_image(model, pixels, self.label_names, name=self.run_dir.name, layers=args.layers)
            if args.html:
                page = image_explorer_page([explanation], title=Path(path).name)
                written.append(page.save(numbered_path(args.html, index, len(texts))))
            if png:
                written.append(plot_image_attention(explanation, numbered_path(png, index, len(texts))))
            best = int(np.argmax(explanation.prediction["probabilities"]))
            print(f"{path}: {self.label_names[best]} ({explanation.prediction['probabilities'][best]:.3f})")
        return written

    def export(self, model, args):
        from tfattn.serving.images import export_image_classifier

        path = export_image_classifier(
            model,
            self.label_names,
            args.out,
            input_size=self.config.image_size,
            overwrite=args.overwrite,
            protected=(self.run_dir,),
        )
        return path, "images (encoded JPEG/PNG bytes; or signature pixels: uint8) -> probabilities, labels, label_ids"
