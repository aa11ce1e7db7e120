"""What every model family shares: the model base and checkpoint I/O, outputs, the config mixin, activations,
input checks, losses, the plain-module rule of the fused paths, and the attention registered with transformers.
Family folders (``bert/``, ``gpt2/``, ``autoencoders/``) import from here, never from each other."""
