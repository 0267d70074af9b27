"""The MNIST CNN the paper calls for: a small convolutional net for 28x28 digits.

Input: raw pixels as float32 0..255, shape (28, 28, 1) (docs/SCHEMA.md); the model rescales
inside (Rescaling 1/255) so int8 input quantization comes out as scale 1.0, zero_point -128
and a uint8 image quantizes losslessly. Output: softmax probabilities over the 10 digits.

Layers: conv3x3(32) x2 -> maxpool -> conv3x3(64) x2 -> maxpool -> dropout -> dense(128)
-> dropout -> dense(10) -> softmax; 197,482 parameters. The two dense layers are written as
convolutions (a 4x4 "valid" conv over the 4x4x64 map is exactly flatten + dense(128); a 1x1
conv is dense(10)) and a global average pool over the remaining 1x1 map drops the spatial
axes. Same function and parameters, but no Flatten: Keras' Flatten converts to
SHAPE/STRIDED_SLICE/PACK/RESHAPE ops that XNNPACK does not take, which split the graph into
two delegate partitions with CPU ops between them. This way the whole float32 graph is one
XNNPACK partition (int8: all but the final SOFTMAX), so the board measures the network, not
the glue.
Trained with Adam, batch 64, learning rate 1e-3 halved every epoch after the first
(`learning_rate`, an optional zoo hook that edgeq.host.train uses when a module defines it).
Where it lands (benchmarks/train_accuracy.py, all 60,000/10,000 images, 4 epochs, 2 shared
cores, 2026-11-28): seed 0: float32 99.40 %, int8 99.39 %, 137 s training; seed 1: 99.41 % and
99.41 %, 157 s. int8 file 26.7 % of float32 (per-tensor weights: 25.7 %, also 99.39 %).
Imports: Keras only inside `build`.
"""

from __future__ import annotations

from typing import Any

NAME = "mnist-cnn"
DESCRIPTION = (
    "Small CNN for MNIST: 2x conv32, pool, 2x conv64, pool, dense128, dense10 (as convolutions), "
    "197k parameters"
)
DEFAULT_EPOCHS = 4
BATCH_SIZE = 64
LEARNING_RATE = 1e-3
INPUT_SHAPE = (28, 28, 1)
NUM_CLASSES = 10


def learning_rate(epoch: int) -> float:
    """Learning rate of the 0-based `epoch`: 1e-3, 1e-3, then halved every epoch."""
    return LEARNING_RATE * 0.5 ** max(0, epoch - 1)


def build(seed: int) -> Any:
    """A compiled, freshly initialised Keras model (weights drawn from `seed`)."""
    import keras
    from keras import layers

    def init(offset: int) -> Any:
        return keras.initializers.GlorotUniform(seed=seed + offset)

    model = keras.Sequential(
        [
            keras.Input(shape=INPUT_SHAPE, dtype="float32", name="image"),
            layers.Rescaling(1.0 / 255.0, name="rescale"),
            layers.Conv2D(32, 3, activation="relu", kernel_initializer=init(1), name="conv1"),
            layers.Conv2D(32, 3, activation="relu", kernel_initializer=init(7), name="conv2"),
            layers.MaxPooling2D(2, name="pool1"),
            layers.Conv2D(64, 3, activation="relu", kernel_initializer=init(2), name="conv3"),
            layers.Conv2D(64, 3, activation="relu", kernel_initializer=init(8), name="conv4"),
            layers.MaxPooling2D(2, name="pool2"),
            layers.Dropout(0.25, seed=seed + 3, name="drop1"),
            # dense(128) on the flattened 4x4x64 map, as a 4x4 valid convolution
            layers.Conv2D(128, 4, activation="relu", kernel_initializer=init(4), name="fc1"),
            layers.Dropout(0.5, seed=seed + 5, name="drop2"),
            # dense(10) as a 1x1 convolution; the average over the 1x1 map drops the spatial axes
            layers.Conv2D(NUM_CLASSES, 1, kernel_initializer=init(6), name="logits"),
            layers.GlobalAveragePooling2D(name="squeeze"),
            layers.Softmax(name="probs"),
        ],
        name="mnist_cnn",
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=LEARNING_RATE),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model
