"""A mobile-style depthwise-separable CNN for MNIST with squared-ReLU blocks: Min-Max's hard case.

What makes it hard for per-tensor Min-Max int8 (and why it is still an honest model):
- Squared-ReLU activations (relu(x)^2, Primer's activation; one MUL op in TFLite) after every
  pointwise convolution, with no normalisation after them. Squaring a roughly Gaussian
  pre-activation gives a heavy right tail (a chi-square-like distribution): most values lie
  near 0 but a few are tens of times larger, so Min-Max spends the 256 int8 levels on the
  few largest values and the bulk of the activations gets a handful of levels. Outlier
  clipping (percentile, MSE) trades a little clipping error for resolution.
- Depthwise 3x3 convolutions followed by batch-norm: folding the batch-norm into the
  depthwise kernel gives every channel its own scale, so per-tensor weight quantization
  (one scale for all channels, MobileNet's known problem) loses channels with small weights.
- No ReLU6 or other bound on the activations.

Input: raw pixels as float32 0..255 (28, 28, 1), rescaled inside (as mnist-cnn).
Layers: conv3x3(16) relu -> [depthwise 3x3 -> BN -> ReLU -> pointwise 1x1 -> BN ->
squared ReLU] x 3 (32, 48, 64 channels, max-pool after the first two) -> global average pool
-> dense(10) -> softmax. Trained with Adam (batch 64, clipnorm 1, learning rate 3e-3 then
halved each epoch), 3 epochs. With --train-limit 20000 (seed 0, 2026-12-02): float32 top-1
97.60 % on the 10,000 test images, trained in about 3.5 minutes on 2 cores shared with
other jobs. Per-tensor Min-Max int8 cost it only 0.25 points (0.10 per-channel; 500
calibration images), too little to tell the methods apart: the zoo's hard model for the
method comparison is mnist-skip-dsconv (benchmarks/methods.py).
The name says "gated" for the MUL that squares each block's output (x * x).
Imports: Keras only inside `build`.
"""

from __future__ import annotations

from typing import Any

NAME = "mnist-gated-dsconv"
DESCRIPTION = (
    "Depthwise-separable CNN for MNIST with squared-ReLU blocks (heavy-tailed activations): "
    "the hard case for per-tensor Min-Max int8"
)
DEFAULT_EPOCHS = 3
BATCH_SIZE = 64
LEARNING_RATE = 3e-3
INPUT_SHAPE = (28, 28, 1)
NUM_CLASSES = 10


def learning_rate(epoch: int) -> float:
    """Learning rate of the 0-based `epoch`: 3e-3, then halved every epoch."""
    return LEARNING_RATE * 0.5 ** max(0, epoch)


def build(seed: int) -> Any:
    """A compiled, freshly initialised Keras model (weights drawn from `seed`)."""
    import keras
    from keras import layers

    def init(offset: int) -> Any:
        return keras.initializers.GlorotUniform(seed=seed + offset)

    def block(x: Any, width: int, name: str, offset: int, square: bool = False) -> Any:
        x = layers.DepthwiseConv2D(3, padding="same", use_bias=False,
                                   depthwise_initializer=init(offset), name=f"{name}_dw")(x)
        x = layers.BatchNormalization(name=f"{name}_dw_bn")(x)
        x = layers.ReLU(name=f"{name}_dw_relu")(x)
        x = layers.Conv2D(width, 1, use_bias=False, kernel_initializer=init(offset + 1),
                          name=f"{name}_pw")(x)
        x = layers.BatchNormalization(name=f"{name}_pw_bn")(x)
        r = layers.ReLU(name=f"{name}_relu")(x)
        return layers.Multiply(name=f"{name}_sq")([r, r]) if square else r  # squared ReLU

    inp = keras.Input(shape=INPUT_SHAPE, dtype="float32", name="image")
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(inp)
    x = layers.Conv2D(16, 3, padding="same", activation="relu", kernel_initializer=init(0),
                      name="stem")(x)
    x = block(x, 32, "block1", 10, square=True)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = block(x, 48, "block2", 20, square=True)
    x = layers.MaxPooling2D(2, name="pool2")(x)
    x = block(x, 64, "block3", 30, square=True)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(NUM_CLASSES, kernel_initializer=init(40), name="logits")(x)
    out = layers.Softmax(name="probs")(x)
    model = keras.Model(inp, out, name="mnist_gated_dsconv")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=LEARNING_RATE, clipnorm=1.0),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model
