"""The DCGAN as a `keras.Model` with its own `train_step` (keras.io style).

One call of `train_step` on a batch of real images is one training step:

1. draw latents and generate one batch of fakes (generator in training mode);
2. one discriminator update on the real batch and those fakes, both seen through the same
   differentiable augmentation (`augment`, components.augment; none by default), with the
   `loss` ("bce": non-saturating BCE from logits with label smoothing, the seed's; or "hinge"),
   plus every `r1_every` steps the R1 penalty gamma/2 * E|grad D(real)|^2 (lazy regularisation as
   in StyleGAN2: scaled by `r1_every` so its average strength is that of an every-step penalty);
3. one generator update through the freshly updated discriminator, on the same fakes;
4. the exponential moving average (EMA) of the generator's weights follows the new weights.

Step 3 reuses the fakes of step 1 instead of running the generator forward again (the PyTorch
DCGAN recipe), which saves one generator forward pass per step (about a tenth of it on a CPU).

`variant="seed"` runs the seed tutorial's loop instead (two inner iterations of a D update on fakes,
a D update on reals and a G update, each with its own tape); it exists for the benchmark and for
anyone reproducing the tutorial. Both variants run under any `tf.distribute` strategy: losses are
divided by the replica count because Keras optimizers sum gradients across replicas.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from components.augment import diff_augment
from components.trainer import LOSSES

VARIANTS = ("dcgan", "seed")
EMA_WARMUP = 10.0  # decay = min(ema_decay, (1 + n) / (warmup + n)): early samples follow the net closely


class DCGAN(keras.Model):
    """Generator, discriminator and the generator's EMA, trained by `fit` over batches of images.

    `ema_generator` must be built by the same builder as `generator` (same layers, same order); it
    starts as a copy of the generator. It is the network to sample from and to export.
    """

    def __init__(
        self,
        generator: keras.Model,
        discriminator: keras.Model,
        ema_generator: keras.Model,
        *,
        ema_decay: float = 0.999,
        ema_warmup: float = EMA_WARMUP,
        variant: str = "dcgan",
        loss: str = "bce",
        augment: str = "",
        r1_gamma: float = 0.0,
        r1_every: int = 16,
        seed: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        if variant == "seed" and (loss != "bce" or augment or r1_gamma):
            raise ValueError("the seed variant trains with BCE only, without augmentation or R1")
        self.generator = generator
        self.discriminator = discriminator
        self.ema_generator = ema_generator
        self.latent_dim = int(generator.input_shape[-1])
        self.ema_decay = float(ema_decay)
        self.ema_warmup = float(ema_warmup)
        self.variant = variant
        self.loss = loss
        self.augment = augment
        self.r1_gamma = float(r1_gamma)
        self.r1_every = int(r1_every)
        # The RNG states live in variables, so checkpoints capture them.
        self.latent_seeds = keras.random.SeedGenerator(seed)
        self.augment_seeds = keras.random.SeedGenerator(seed + 1)
        for ema_weight, weight in zip(ema_generator.weights, generator.weights):
            ema_weight.assign(weight)
        # Every part is a built functional model; there is nothing left for Keras to build.
        self.built = True

    def compile(self, d_optimizer, g_optimizer, loss_fn, **kwargs):
        """Two optimisers (D and G) and `loss_fn(labels, logits)`, BCE from logits (unused by "hinge")."""
        super().compile(optimizer=None, **kwargs)
        self.d_optimizer = d_optimizer
        self.g_optimizer = g_optimizer
        self.loss_fn = loss_fn
        # Create the Adam slots now, eagerly (under the strategy's scope when there is one): a
        # checkpoint restore needs them, and built lazily inside the first distributed step they
        # break MirroredStrategy on several devices ("You must feed a value for placeholder tensor").
        d_optimizer.build(self.discriminator.trainable_variables)
        g_optimizer.build(self.generator.trainable_variables)

    def call(self, latents, training=False):
        """Samples from the EMA generator: the model's output is what it would export."""
        return self.ema_generator(latents, training=training)

    def train_step(self, data):
        real_images, _, _ = keras.utils.unpack_x_y_sample_weight(data)  # images only; labels unused
        if self.variant == "seed":
            return self._seed_step(real_images)
        return self._dcgan_step(real_images)

    # -- the default step -------------------------------------------------------------------------

    def _dcgan_step(self, real_images):
        latents = self._draw_latents(tf.shape(real_images)[0])
        with tf.GradientTape() as g_tape:
            fake_images = self.generator(latents, training=True)
            with g_tape.stop_recording():
                d_loss, real_logits, fake_logits = self._update_discriminator(real_images, tf.stop_gradient(fake_images))
            g_loss = self._generator_loss(self.discriminator(self._augment(fake_images), training=True))
            scaled_g_loss = self._scale_loss(self.g_optimizer, g_loss)
        self._apply(self.g_optimizer, g_tape.gradient(scaled_g_loss, self.generator.trainable_weights), self.generator)
        self._update_ema()
        return self._step_metrics(d_loss, g_loss, real_logits, fake_logits)

    def _update_discriminator(self, real_images, fake_images):
        """One D update on reals and fakes in one forward pass of both (reals first)."""
        batch = tf.shape(real_images)[0]
        with tf.GradientTape() as tape:
            seen = self._augment(tf.concat([real_images, fake_images], axis=0))
            logits = self.discriminator(seen, training=True)
            real_logits, fake_logits = logits[:batch], logits[batch:]
            d_loss = self._discriminator_loss(real_logits, fake_logits)
            if self.r1_gamma:
                due = tf.equal(self.d_optimizer.iterations % self.r1_every, 0)
                d_loss += tf.cond(due, lambda: self._r1_penalty(seen[:batch]), lambda: tf.constant(0.0))
            scaled_d_loss = self._scale_loss(self.d_optimizer, d_loss)
        self._apply(self.d_optimizer, tape.gradient(scaled_d_loss, self.discriminator.trainable_weights), self.discriminator)
        return d_loss, real_logits, fake_logits

    def _discriminator_loss(self, real_logits, fake_logits):
        """BCE: reals labelled 1, fakes 0 (with label smoothing); hinge: max(0, 1 - D(x)) on reals,
        max(0, 1 + D(G(z))) on fakes."""
        if self.loss == "hinge":
            return tf.reduce_mean(tf.nn.relu(1.0 - real_logits)) + tf.reduce_mean(tf.nn.relu(1.0 + fake_logits))
        return self.loss_fn(tf.ones_like(real_logits), real_logits) + self.loss_fn(tf.zeros_like(fake_logits), fake_logits)

    def _generator_loss(self, fake_logits):
        """Non-saturating: the generator wants its fakes called real (hinge: -D(G(z)))."""
        if self.loss == "hinge":
            return -tf.reduce_mean(fake_logits)
        return self.loss_fn(tf.ones_like(fake_logits), fake_logits)

    def _r1_penalty(self, real_images):
        """gamma/2 * E|grad_x D(x)|^2 on (augmented) reals, times r1_every for the lazy schedule."""
        with tf.GradientTape() as tape:
            tape.watch(real_images)
            logits = self.discriminator(real_images, training=True)
        gradients = tf.cast(tape.gradient(logits, real_images), tf.float32)  # of the sum of logits
        squared_norms = tf.reduce_sum(tf.square(gradients), axis=[1, 2, 3])
        return 0.5 * self.r1_gamma * self.r1_every * tf.reduce_mean(squared_norms)

    def _augment(self, images):
        """DiffAugment with this step's seed, or the images unchanged when there is no policy."""
        if not self.augment:
            return images
        return diff_augment(images, self.augment, seed=tf.cast(self._replica_seed(self.augment_seeds), tf.int32))

    # -- the seed tutorial's step, kept for the benchmark -------------------------------------------

    def _seed_step(self, real_images):
        """The seed's `train_step`, restated: two rounds of D-on-fakes, D-on-reals, G, each its own tape.

        Unlike the seed's Keras 2 code, the networks are called with `training=True`: Keras 3 runs
        bare calls in inference mode, while the seed's `fit` trained BatchNorm and Dropout.
        """
        batch = tf.shape(real_images)[0]
        for _ in range(2):
            fake_images = self.generator(self._draw_latents(batch), training=True)
            with tf.GradientTape() as tape:
                fake_logits = self.discriminator(fake_images, training=True)
                d1_loss = self.loss_fn(tf.zeros_like(fake_logits), fake_logits)
                scaled = self._scale_loss(self.d_optimizer, d1_loss)
            self._apply(self.d_optimizer, tape.gradient(scaled, self.discriminator.trainable_weights), self.discriminator)

            with tf.GradientTape() as tape:
                real_logits = self.discriminator(real_images, training=True)
                d2_loss = self.loss_fn(tf.ones_like(real_logits), real_logits)
                scaled = self._scale_loss(self.d_optimizer, d2_loss)
            self._apply(self.d_optimizer, tape.gradient(scaled, self.discriminator.trainable_weights), self.discriminator)

            latents = self._draw_latents(batch)
            with tf.GradientTape() as tape:
                g_loss = self._generator_loss(
                    self.discriminator(self.generator(latents, training=True), training=True)
                )
                scaled = self._scale_loss(self.g_optimizer, g_loss)
            self._apply(self.g_optimizer, tape.gradient(scaled, self.generator.trainable_weights), self.generator)
        self._update_ema()
        return self._step_metrics(d1_loss + d2_loss, g_loss, real_logits, fake_logits)

    # -- shared pieces ------------------------------------------------------------------------------

    def _draw_latents(self, batch):
        """N(0, 1) latents from the checkpointed seed state, different on every replica."""
        return tf.random.stateless_normal((batch, self.latent_dim), seed=self._replica_seed(self.latent_seeds))

    @staticmethod
    def _replica_seed(seeds: keras.random.SeedGenerator):
        """The next seed of `seeds` folded with this replica's id: every replica draws its own
        numbers (the same seed state is mirrored on all of them)."""
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        return tf.random.experimental.stateless_fold_in(seeds.next(), tf.cast(replica, tf.int32))

    @staticmethod
    def _scale_loss(optimizer, loss):
        """Per-replica mean loss -> the share of the global mean (Keras sums replica gradients),
        times the optimiser's loss scale (float16 only; a no-op otherwise)."""
        replicas = tf.distribute.get_replica_context().num_replicas_in_sync
        return optimizer.scale_loss(loss / tf.cast(replicas, loss.dtype))

    @staticmethod
    def _apply(optimizer, gradients, model):
        optimizer.apply_gradients(zip(gradients, model.trainable_weights))

    def _update_ema(self):
        """EMA of the trainable weights (with a warm-up); BatchNorm statistics are copied."""
        updates = tf.cast(self.g_optimizer.iterations, tf.float32)
        decay = tf.minimum(self.ema_decay, (1.0 + updates) / (self.ema_warmup + updates))
        for ema_weight, weight in zip(self.ema_generator.trainable_weights, self.generator.trainable_weights):
            ema_weight.assign(weight + decay * (ema_weight - weight))
        for ema_weight, weight in zip(self.ema_generator.non_trainable_weights, self.generator.non_trainable_weights):
            ema_weight.assign(weight)

    @staticmethod
    def _step_metrics(d_loss, g_loss, real_logits, fake_logits) -> dict:
        """This step's losses and the discriminator's mean belief that reals / fakes are real.

        Each value has shape [1]: under MultiWorkerMirroredStrategy Keras averages step outputs
        over workers with `strategy.reduce(MEAN, axis=0)`, which fails on scalars. Every worker
        then sees the same values, so all stop together when one of them is not finite.
        """
        metrics = {
            "d_loss": d_loss,
            "g_loss": g_loss,
            "d_real": tf.reduce_mean(tf.sigmoid(real_logits)),
            "d_fake": tf.reduce_mean(tf.sigmoid(fake_logits)),
        }
        return {name: tf.reshape(value, [1]) for name, value in metrics.items()}
