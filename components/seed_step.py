"""The seed tutorial's own training step, kept as an explicit variant of the DCGAN (`--train-step seed`).

The tutorial's `train_step` makes two rounds per batch of real images, each round being a
discriminator update on fresh fakes, a discriminator update on the reals and a generator update
on fresh fakes, each with its own tape: 4 D and 2 G updates per batch where our step
(`components.gan.DCGAN`) makes one of each. It is here so that the tutorial's recipe can be
measured the way the tutorial trains it (bench/bench_quality.py reports both), and for anyone
reproducing the tutorial.

Unlike the seed's Keras 2 code, the networks are called with `training=True`: Keras 3 runs bare
calls in inference mode, while the seed's `fit` trained BatchNorm and Dropout.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from components.gan import DCGAN


class SeedStepDCGAN(DCGAN):
    """The DCGAN trained by the tutorial's two-round loop (BCE only: no augmentation, no R1)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.adversarial_loss != "bce" or self.augment or self.r1_gamma or self.mirror:
            raise ValueError("the seed training step trains with BCE only, without augmentation, mirroring or R1")

    def train_step(self, data):
        real_images, _, _ = keras.utils.unpack_x_y_sample_weight(data)  # images only; labels unused
        batch = tf.shape(real_images)[0]
        for _ in range(2):
            fake_images = self.generator(self._draw_latents(batch), training=True)
            with tf.GradientTape() as tape:
                fake_logits = self.discriminator(fake_images, training=True)
                d_fake_loss = self.bce(tf.zeros_like(fake_logits), fake_logits)
                scaled = self._scale_loss(self.d_optimizer, d_fake_loss)
            self._apply(self.d_optimizer, tape.gradient(scaled, self.discriminator.trainable_weights), self.discriminator)

            with tf.GradientTape() as tape:
                real_logits = self.discriminator(real_images, training=True)
                d_real_loss = self.bce(tf.ones_like(real_logits), real_logits)
                scaled = self._scale_loss(self.d_optimizer, d_real_loss)
            self._apply(self.d_optimizer, tape.gradient(scaled, self.discriminator.trainable_weights), self.discriminator)

            latents = self._draw_latents(batch)
            with tf.GradientTape() as tape:
                g_loss = self._generator_loss(self.discriminator(self.generator(latents, training=True), training=True))
                scaled = self._scale_loss(self.g_optimizer, g_loss)
            self._apply(self.g_optimizer, tape.gradient(scaled, self.generator.trainable_weights), self.generator)
        return self._end_step(real_images, d_fake_loss + d_real_loss, g_loss, real_logits, fake_logits)
