"""The DCGAN as a `keras.Model` with its own `train_step` (keras.io style).

One call of `train_step` on a batch of real images is one training step:

1. draw latents and generate one batch of fakes (generator in training mode); with `mirror`,
   each real image is flipped left-right with probability 1/2 (a face's mirror image is a face:
   twice the distinct reals, nothing for D to tell apart, so nothing leaks into the fakes);
2. one discriminator update on the real batch and those fakes, both seen through the same
   differentiable augmentation (`augment`, components.augment; none by default), applied to each
   image with probability `augment_p` (1 unless adaptive, see below), with the
   `adversarial_loss` ("bce": non-saturating BCE from logits with label smoothing, the seed's; or
   "hinge"), plus every `r1_every` steps the R1 penalty gamma/2 * E|grad D(real)|^2 (lazy
   regularisation as in StyleGAN2: scaled by `r1_every` so its average strength is that of an
   every-step penalty);
3. one generator update through the freshly updated discriminator, on the same fakes;
4. the exponential moving average (EMA) of the generator's weights follows the new weights;
5. the step and images-seen counters and the running means of `metrics` are updated, all in the
   graph: the host reads them only when Keras hands control back (every `steps_per_execution`
   steps), so a fast device never waits for Python between steps.

Adaptive augmentation (`ada_target` > 0; StyleGAN2-ADA's heuristic): `augment_p` starts at 0
and every `ADA_INTERVAL` steps moves towards more augmentation when D's sign on reals, averaged
over those steps, is above `ada_target` (D is growing sure of the reals it has seen: it starts
to overfit them) and towards less when below, by at most 1 per `ada_images` images seen. With
few faces and many passes D overfits early; with many faces the heuristic keeps p near 0, so
augmentation costs nothing where it is not needed.

Step 3 reuses the fakes of step 1 instead of running the generator forward again (the PyTorch
DCGAN recipe), which saves one generator forward pass per step (about a tenth of it on a CPU).
The seed tutorial's own loop is `components.seed_step.SeedStepDCGAN`, a subclass.

Every step runs under any `tf.distribute` strategy: losses are divided by the replica count
because Keras optimizers sum gradients across replicas.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from components.augment import diff_augment
from components.config import EMA_WARMUP, LOSSES

ADA_INTERVAL = 4  # steps between two adjustments of the adaptive augmentation probability (StyleGAN2-ADA's)
METRICS = ("d_loss", "g_loss", "d_real_logit", "d_fake_logit", "augment_p")


class DCGAN(keras.Model):
    """Generator, discriminator and the generator's EMA, trained by `fit` over batches of images.

    `ema_generator` must be built by the same builder as `generator` (same layers, same order); it
    starts as a copy of the generator. It is the network to sample from and to export.
    `metrics` are running means since their last reset (the trainer resets them every log
    interval): the losses, and D's mean logit on reals and on fakes (above 0 means "real").
    """

    def __init__(
        self,
        generator: keras.Model,
        discriminator: keras.Model,
        ema_generator: keras.Model,
        *,
        ema_decay: float = 0.999,
        ema_warmup: float = EMA_WARMUP,
        adversarial_loss: str = "bce",
        augment: str = "",
        ada_target: float = 0.0,
        ada_images: int = 10_000,
        mirror: bool = False,
        r1_gamma: float = 0.0,
        r1_every: int = 16,
        seed: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if adversarial_loss not in LOSSES:
            raise ValueError(f"adversarial_loss must be one of {LOSSES}, got {adversarial_loss!r}")
        self.generator = generator
        self.discriminator = discriminator
        self.ema_generator = ema_generator
        self.latent_dim = int(generator.input_shape[-1])
        self.ema_decay = float(ema_decay)
        self.ema_warmup = float(ema_warmup)
        self.adversarial_loss = adversarial_loss
        self.augment = augment
        self.ada_target = float(ada_target) if augment else 0.0
        self.ada_images = int(ada_images)
        self.mirror = bool(mirror)
        self.r1_gamma = float(r1_gamma)
        self.r1_every = int(r1_every)
        # The RNG states and counters live in variables, so checkpoints capture them. The counters
        # are updated once per step whatever the replica count (only the first replica's update).
        self.latent_seeds = keras.random.SeedGenerator(seed)
        self.augment_seeds = keras.random.SeedGenerator(seed + 1)
        first_replica = tf.VariableAggregation.ONLY_FIRST_REPLICA
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step", aggregation=first_replica)
        self.images_seen = tf.Variable(0, dtype=tf.int64, trainable=False, name="images_seen", aggregation=first_replica)
        # The augmentation probability and the sum of D's signs on reals since its last adjustment.
        start_p = 0.0 if self.ada_target or not augment else 1.0
        self.augment_p = tf.Variable(start_p, trainable=False, name="augment_p", aggregation=first_replica)
        self.ada_signs = tf.Variable(0.0, trainable=False, name="ada_signs", aggregation=first_replica)
        self.trackers = {name: keras.metrics.Mean(name=name) for name in METRICS}
        for ema_weight, weight in zip(ema_generator.weights, generator.weights):
            ema_weight.assign(weight)
        # Every part is a built functional model; there is nothing left for Keras to build.
        self.built = True

    @property
    def metrics(self) -> list:
        return list(self.trackers.values())

    def checkpointed_state(self) -> dict:
        """The training state beyond networks, optimisers, latents and counters that this run has:
        only runs that augment or mirror hold these, so checkpoints of runs without them still load."""
        state = {}
        if self.augment or self.mirror:
            state["augment_rng"] = self.augment_seeds.state
        if self.ada_target:
            state["augment_p"] = self.augment_p
            state["ada_signs"] = self.ada_signs
        return state

    def compile(self, d_optimizer, g_optimizer, bce, **kwargs):
        """Two optimisers (D and G) and `bce(labels, logits)`, BCE from logits (unused by "hinge")."""
        super().compile(optimizer=None, **kwargs)
        self.d_optimizer = d_optimizer
        self.g_optimizer = g_optimizer
        self.bce = bce
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
        if self.mirror:
            real_images = self._mirror(real_images)
        latents = self._draw_latents(tf.shape(real_images)[0])
        with tf.GradientTape() as g_tape:
            fake_images = self.generator(latents, training=True)
            with g_tape.stop_recording():
                d_loss, real_logits, fake_logits = self._update_discriminator(real_images, tf.stop_gradient(fake_images))
            g_loss = self._generator_loss(self.discriminator(self._augment(fake_images), training=True))
            scaled_g_loss = self._scale_loss(self.g_optimizer, g_loss)
        self._apply(self.g_optimizer, g_tape.gradient(scaled_g_loss, self.generator.trainable_weights), self.generator)
        return self._end_step(real_images, d_loss, g_loss, real_logits, fake_logits)

    def _update_discriminator(self, real_images, fake_images):
        """One D update on reals and fakes in one forward pass of both (reals first)."""
        batch = tf.shape(real_images)[0]
        with tf.GradientTape() as tape:
            seen = self._augment(tf.concat([real_images, fake_images], axis=0))
            logits = self.discriminator(seen, training=True)
            real_logits, fake_logits = logits[:batch], logits[batch:]
            d_loss = self._discriminator_loss(real_logits, fake_logits)
            scaled_d_loss = self._scale_loss(self.d_optimizer, d_loss)
        gradients = tape.gradient(scaled_d_loss, self.discriminator.trainable_weights)
        if self.r1_gamma:
            penalty, gradients = self._add_lazy_r1(gradients, seen[:batch])
            d_loss += penalty
        self._apply(self.d_optimizer, gradients, self.discriminator)
        if self.ada_target:
            self._adapt_augmentation(real_logits)
        return d_loss, real_logits, fake_logits

    def _adapt_augmentation(self, real_logits):
        """Sum D's signs on reals; every ADA_INTERVAL steps move `augment_p` by the images seen
        since the last move over `ada_images`, up if their mean is above `ada_target`, else down."""
        replicas = tf.distribute.get_replica_context().num_replicas_in_sync  # the first replica's signs stand for all
        self.ada_signs.assign_add(tf.reduce_mean(tf.sign(tf.cast(real_logits, tf.float32))))

        def adjust():
            batch = tf.cast(tf.shape(real_logits)[0] * replicas * ADA_INTERVAL, tf.float32)
            direction = tf.sign(self.ada_signs / ADA_INTERVAL - self.ada_target)
            self.augment_p.assign(tf.clip_by_value(self.augment_p + direction * batch / self.ada_images, 0.0, 1.0))
            self.ada_signs.assign(0.0)
            return tf.constant(0)

        tf.cond(tf.equal((self.step + 1) % ADA_INTERVAL, 0), adjust, lambda: tf.constant(0))

    def _add_lazy_r1(self, gradients, real_images):
        """D's `gradients` plus the R1 penalty's (loss-scaled) on steps where it is due, unchanged on
        the others; and the penalty (0 when not due). The branch returns gradients instead of adding
        the penalty to D's loss: a gradient taken through the `tf.cond` of a second-order gradient
        fails to compile under XLA."""

        def due():
            with tf.GradientTape() as tape:
                penalty = self._r1_penalty(real_images)
                scaled = self._scale_loss(self.d_optimizer, penalty)
            r1 = tape.gradient(scaled, self.discriminator.trainable_weights)  # None: biases D's input gradient ignores
            return penalty, [g if r is None else g + r for g, r in zip(gradients, r1)]

        def not_due():
            return tf.constant(0.0), list(gradients)

        return tf.cond(tf.equal(self.d_optimizer.iterations % self.r1_every, 0), due, not_due)

    def _discriminator_loss(self, real_logits, fake_logits):
        """BCE: reals labelled 1, fakes 0 (with label smoothing); hinge: max(0, 1 - D(x)) on reals,
        max(0, 1 + D(G(z))) on fakes."""
        if self.adversarial_loss == "hinge":
            return tf.reduce_mean(tf.nn.relu(1.0 - real_logits)) + tf.reduce_mean(tf.nn.relu(1.0 + fake_logits))
        return self.bce(tf.ones_like(real_logits), real_logits) + self.bce(tf.zeros_like(fake_logits), fake_logits)

    def _generator_loss(self, fake_logits):
        """Non-saturating: the generator wants its fakes called real (hinge: -D(G(z)))."""
        if self.adversarial_loss == "hinge":
            return -tf.reduce_mean(fake_logits)
        return self.bce(tf.ones_like(fake_logits), fake_logits)

    def _r1_penalty(self, real_images):
        """gamma/2 * E|grad_x D(x)|^2 on (augmented) reals, times r1_every for the lazy schedule."""
        with tf.GradientTape() as tape:
            tape.watch(real_images)
            logits = self.discriminator(real_images, training=True)
        gradients = tf.cast(tape.gradient(logits, real_images), tf.float32)  # of the sum of logits
        squared_norms = tf.reduce_sum(tf.square(gradients), axis=[1, 2, 3])
        return 0.5 * self.r1_gamma * self.r1_every * tf.reduce_mean(squared_norms)

    def _augment(self, images):
        """DiffAugment with this step's seed, each image augmented with probability `augment_p`
        (all of them when it is 1); the images unchanged when there is no policy."""
        if not self.augment:
            return images
        seed = tf.cast(self._replica_seed(self.augment_seeds), tf.int32)
        augmented = diff_augment(images, self.augment, seed=seed)
        if not self.ada_target:
            return augmented
        return _each_with_probability(self.augment_p, augmented, images, tf.random.experimental.stateless_fold_in(seed, 99))

    def _mirror(self, real_images):
        """Each real image flipped left-right with probability 1/2."""
        seed = tf.cast(self._replica_seed(self.augment_seeds), tf.int32)
        return _each_with_probability(0.5, tf.reverse(real_images, axis=[2]), real_images, seed)

    # -- shared by every training step ----------------------------------------------------------

    def _draw_latents(self, batch):
        """N(0, 1) latents from the checkpointed seed state, different on every replica."""
        return tf.random.stateless_normal([batch, self.latent_dim], seed=self._replica_seed(self.latent_seeds))

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

    def _end_step(self, real_images, d_loss, g_loss, real_logits, fake_logits) -> dict:
        """EMA, counters and running means after the updates; the step's outputs for Keras."""
        self._update_ema()
        replicas = tf.distribute.get_replica_context().num_replicas_in_sync
        self.step.assign_add(1)
        self.images_seen.assign_add(tf.cast(tf.shape(real_images)[0] * replicas, tf.int64))
        values = {
            "d_loss": d_loss,
            "g_loss": g_loss,
            "d_real_logit": tf.reduce_mean(tf.cast(real_logits, tf.float32)),
            "d_fake_logit": tf.reduce_mean(tf.cast(fake_logits, tf.float32)),
            "augment_p": tf.cast(self.augment_p, tf.float32),
        }
        for name, value in values.items():
            self.trackers[name].update_state(value)
        return self.step_outputs()

    def step_outputs(self) -> dict:
        """The running means, each of shape [1]: under MultiWorkerMirroredStrategy Keras averages
        step outputs over workers with `strategy.reduce(MEAN, axis=0)`, which fails on scalars."""
        return {name: tf.reshape(tracker.result(), [1]) for name, tracker in self.trackers.items()}

    def _update_ema(self):
        """EMA of the trainable weights (with a warm-up); BatchNorm statistics are copied."""
        updates = tf.cast(self.g_optimizer.iterations, tf.float32)
        decay = tf.minimum(self.ema_decay, (1.0 + updates) / (self.ema_warmup + updates))
        for ema_weight, weight in zip(self.ema_generator.trainable_weights, self.generator.trainable_weights):
            ema_weight.assign(weight + decay * (ema_weight - weight))
        for ema_weight, weight in zip(self.ema_generator.non_trainable_weights, self.generator.non_trainable_weights):
            ema_weight.assign(weight)


def _each_with_probability(probability, changed, images, seed):
    """Per image of the batch: `changed` with `probability`, else `images` (one stateless draw each)."""
    draws = tf.random.stateless_uniform([tf.shape(images)[0], 1, 1, 1], seed)
    return tf.where(draws < tf.cast(probability, draws.dtype), changed, images)
