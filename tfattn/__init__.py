"""tfattn: attention-based text models in Keras/TensorFlow (tf-keras).

Layers live in `tfattn.layers`, model factories in `tfattn.networks`, the optimizer in
`tfattn.training.optimizer`, tasks (AG News, ...) in `tfattn.tasks`, and the `tfattn` command in
`tfattn.cli`. Submodules import TensorFlow, so `import tfattn` alone stays cheap.
"""

__version__ = "0.1.0"
