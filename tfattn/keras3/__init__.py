"""tfattn for Keras 3 (`import keras`, or `from tensorflow import keras` on TensorFlow 2.16+).

The rest of tfattn is built on tf-keras (Keras 2), which transformers' TF models and TF-Hub
require; its layers cannot go into a Keras 3 model. The building blocks are here as Keras 3
layers too: `from tfattn.keras3.layers import TokenAndPositionEmbedding, TransformerBlock`.
README "Which Keras?" says which to use when.
"""
