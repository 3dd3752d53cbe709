"""The training loop: one compiled TensorFlow call per epoch, early stopping in Python.

Keras ``fit`` spends more Python per epoch on this head (data adapters, callbacks, a
fresh validation pass) than the head's own computation takes when it trains on cached
features (docs/benchmarks.md). Here every batch of an epoch and the validation pass run
inside one ``tf.function``; Python only sees one call and four numbers per epoch.

The same loop trains the head on cached features and (for the benchmark and the
equivalence test) the whole model on images, the notebook's way.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from shapes_pipeline.helpers.step import event

METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")


Data = tuple[np.ndarray, np.ndarray] | tf.data.Dataset


def fit(
    network: keras.Model,
    train: Data,
    val: Data | None,
    *,
    epochs: int,
    batch_size: int,
    patience: int,
    seed: int,
    learning_rate: float = 1e-3,
    log: bool = True,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    strategy: tf.distribute.Strategy | None = None,
) -> dict[str, list[float]]:
    """Adam on sparse cross-entropy, shuffled each epoch; restores the best epoch's weights.

    ``train`` and ``val`` are arrays ``(x, y)`` held in memory, or ``tf.data`` datasets of
    ``(x, y)`` batches read as training goes (they shuffle themselves). Under a
    ``strategy`` with several replicas (``network`` built in its scope) each batch is split
    between them and the gradients summed, so the arithmetic is one device's.

    Stops when validation loss has not improved for ``patience`` epochs, as Keras'
    ``EarlyStopping(restore_best_weights=True)`` does. Without validation data (``val``
    None) it runs every epoch and keeps the last. Each epoch is an ``epoch`` event in the
    log (``log``) and a call of ``on_epoch(epoch, values)``. Returns the per-epoch history.
    """
    strategy = strategy or tf.distribute.get_strategy()
    has_val = val is not None and (isinstance(val, tf.data.Dataset) or len(val[1]) > 0)
    metrics = METRICS if has_val else METRICS[:2]
    weights = network.trainable_variables
    with strategy.scope():
        optimizer = keras.optimizers.Adam(learning_rate=learning_rate)
        if keras.mixed_precision.global_policy().compute_dtype == "float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(weights)
    in_memory = isinstance(train, tuple) and strategy.num_replicas_in_sync == 1
    if in_memory:
        run_epoch = _epoch_in_memory(
            network, optimizer, train, val if has_val else None, batch_size, seed
        )
    else:
        batches = {
            name: strategy.experimental_distribute_dataset(
                data if isinstance(data, tf.data.Dataset) else _batches(data, batch_size, seed)
            )
            for name, data in (("train", train), ("val", val if has_val else None))
            if data is not None
        }
        run_epoch = _epoch_streamed(network, optimizer, strategy, batches)

    history: dict[str, list[float]] = {name: [] for name in metrics}
    best_loss, best_weights, waited = math.inf, None, 0
    for epoch in range(epochs):
        started = time.perf_counter()
        numbers = run_epoch(tf.constant(epoch, tf.int32)).numpy().tolist()
        values = dict(zip(metrics, numbers, strict=True))
        for name, value in values.items():
            history[name].append(value)
        if log:
            seconds = round(time.perf_counter() - started, 3)
            event("epoch", epoch=epoch + 1, epochs=epochs, seconds=seconds, **values)
        if on_epoch:
            on_epoch(epoch, values)
        if not has_val:
            continue
        if values["val_loss"] < best_loss:
            best_loss, best_weights, waited = values["val_loss"], [w.numpy() for w in weights], 0
        else:
            waited += 1
            if waited >= patience:
                break
    for variable, value in zip(weights, best_weights or [], strict=False):
        variable.assign(value)
    return history


def _correct(labels: tf.Tensor, probabilities: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(tf.cast(tf.argmax(probabilities, axis=1) == labels, tf.float32))


def _batches(arrays: tuple[np.ndarray, np.ndarray], batch_size: int, seed: int) -> tf.data.Dataset:
    data = tf.data.Dataset.from_tensor_slices(arrays)
    return data.shuffle(len(arrays[1]), seed=seed, reshuffle_each_iteration=True).batch(batch_size)


def _epoch_in_memory(network, optimizer, train, val, batch_size: int, seed: int):
    """One epoch over arrays on one device: batches gathered by a stateless shuffle of
    (seed, epoch), so the order does not depend on what ran before."""
    x, y = tf.constant(train[0]), tf.constant(train[1])
    x_val, y_val = (tf.constant(val[0]), tf.constant(val[1])) if val is not None else (None, None)
    n, steps = len(train[1]), math.ceil(len(train[1]) / batch_size)
    weights = network.trainable_variables
    cross_entropy = keras.losses.SparseCategoricalCrossentropy()

    @tf.function
    def run_epoch(epoch: tf.Tensor) -> tf.Tensor:
        order = tf.random.experimental.stateless_shuffle(tf.range(n), seed=tf.stack([seed, epoch]))
        loss_sum, hits = tf.constant(0.0), tf.constant(0.0)
        for step in tf.range(steps):
            batch = order[step * batch_size : (step + 1) * batch_size]
            images, labels = tf.gather(x, batch), tf.gather(y, batch)
            with tf.GradientTape() as tape:
                probabilities = network(images, training=True)
                loss = cross_entropy(labels, probabilities)
                scaled = optimizer.scale_loss(loss)  # loss scaling under mixed precision
            optimizer.apply(tape.gradient(scaled, weights), weights)
            size = tf.cast(tf.size(labels), tf.float32)
            loss_sum += loss * size
            hits += _correct(labels, probabilities)
        if x_val is None:
            return tf.stack([loss_sum / n, hits / n])
        val_probabilities = network(x_val, training=False)
        return tf.stack(
            [
                loss_sum / n,
                hits / n,
                cross_entropy(y_val, val_probabilities),
                _correct(y_val, val_probabilities) / tf.cast(tf.size(y_val), tf.float32),
            ]
        )

    return run_epoch


def _epoch_streamed(network, optimizer, strategy: tf.distribute.Strategy, batches: dict):
    """One epoch over (distributed) datasets: each replica's loss is its share of the
    global batch's mean, so the summed gradients are the global batch's."""
    weights = network.trainable_variables
    per_example = keras.losses.SparseCategoricalCrossentropy(reduction=None)
    total = tf.distribute.ReduceOp.SUM

    def train_step(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, ...]:
        size = tf.cast(tf.size(labels), tf.float32)
        global_size = tf.distribute.get_replica_context().all_reduce(total, size)
        with tf.GradientTape() as tape:
            probabilities = network(images, training=True)
            losses = per_example(labels, probabilities)
            loss = tf.reduce_sum(losses) / global_size
            scaled = optimizer.scale_loss(loss)
        optimizer.apply(tape.gradient(scaled, weights), weights)
        return tf.reduce_sum(losses), _correct(labels, probabilities), size

    def val_step(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, ...]:
        probabilities = network(images, training=False)
        size = tf.cast(tf.size(labels), tf.float32)
        return (
            tf.reduce_sum(per_example(labels, probabilities)),
            _correct(labels, probabilities),
            size,
        )

    def sums(step, data) -> tf.Tensor:
        result = tf.zeros(3)
        for images, labels in data:
            parts = strategy.run(step, args=(images, labels))
            result += tf.stack([strategy.reduce(total, p, axis=None) for p in parts])
        return result

    @tf.function
    def run_epoch(epoch: tf.Tensor) -> tf.Tensor:
        loss, hits, n = tf.unstack(sums(train_step, batches["train"]))
        if "val" not in batches:
            return tf.stack([loss / n, hits / n])
        val_loss, val_hits, val_n = tf.unstack(sums(val_step, batches["val"]))
        return tf.stack([loss / n, hits / n, val_loss / val_n, val_hits / val_n])

    return run_epoch


class TensorBoardWriter:
    """Per-epoch scalars as training goes, in the layout Keras' TensorBoard callback uses
    (``train/``, ``validation/``), so ``tensorboard --logdir`` shows a run in progress."""

    def __init__(self, log_dir: str | Path):
        self.writers = {
            "": tf.summary.create_file_writer(str(Path(log_dir, "train"))),
            "val_": tf.summary.create_file_writer(str(Path(log_dir, "validation"))),
        }
        self.step = 0

        # one traced call per epoch: tf.summary's Python costs more than the head's epoch
        self._write = tf.function(self._scalars)

    def _scalars(self, step: tf.Tensor, values: dict[str, tf.Tensor]) -> None:
        for prefix, writer in self.writers.items():
            with writer.as_default():
                for name in ("loss", "accuracy"):
                    if prefix + name in values:
                        tf.summary.scalar(f"epoch_{name}", values[prefix + name], step=step)
                writer.flush()

    def __call__(self, epoch: int, values: dict[str, float]) -> None:
        tensors = {name: tf.constant(value, tf.float32) for name, value in values.items()}
        self._write(tf.constant(self.step, tf.int64), tensors)
        self.step += 1

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
