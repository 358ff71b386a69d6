"""Training every exit jointly, or the main network alone, over shuffled epochs.

``train_exits`` is the loop behind the original's ``utils.train``: epochs of
shuffled mini-batches through ``BranchyNet.train``/``train_main``, with
per-epoch curves, progress output, snapshots on every epoch end and on
SIGINT/SIGTERM, and an exact resume (``branchynet.training.checkpoint``); with
``distributed=``, data-parallel over MPI ranks (``branchynet.training.distributed``).
"""
import numbers
import os
import sys
import time

import chainer
import numpy

from branchynet.augment import epoch_flips, epoch_shifts, flip_batch, shift_batch
from branchynet.net import NonFiniteLoss
from branchynet.progress import Progress
from branchynet.validation import (InvalidType, InvalidValue, is_real_number,
                                   nonfinite_optimizer_state, nonfinite_params,
                                   validate_inputs, validate_labels)

#: Adam's beta1 of the original code (Chainer's default); the paper states 0.99.
ORIGINAL_ADAM_BETA1 = 0.9
#: Softening temperature of self-distillation when only its weight is given.
DEFAULT_DISTILL_TEMPERATURE = 3.0
#: The temperatures self-distillation accepts (the literature uses 1 to 20;
#: T ** 2 scales the loss, so 1e308 would overflow).
DISTILL_TEMPERATURES = (0.1, 100.0)
#: Learning-rate schedules of ``train_exits``: 'constant' is the original's.
LR_SCHEDULES = ('constant', 'cosine')
#: ``train_exits``' options beyond the original's recipe (the driver's config keys).
RECIPE_OPTIONS = ('exit_weights', 'distill_weight', 'distill_temperature', 'adam_beta1',
                  'lr_schedule', 'shift', 'flip')


class NonFiniteWeights(NonFiniteLoss):
    """An update made weights NaN or infinite (the loss was finite); the
    weights were put back to the last epoch end."""


def train_exits(net, x, y, main=False, batchsize=512, num_epoch=20, seed=None, progress=True,
                on_epoch_end=None, augment=False, snapshot=None, resume=False, settings=None,
                distributed=None, exit_weights=None, distill_weight=None,
                distill_temperature=None, adam_beta1=None, lr_schedule=None, shift=None,
                flip=None):
    """Train ``net`` for ``num_epoch`` epochs of shuffled mini-batches.

    ``main=True`` trains the main network only (``net.train_main``), otherwise
    every exit jointly (``net.train``). ``on_epoch_end(epoch, losses, accs)``
    is called after each epoch with that epoch's per-exit means.
    ``augment=True`` trains on augmented images (``branchynet.augment``).

    ``snapshot`` names a file written at every epoch end (model, optimizer,
    position, curves, random state; see ``branchynet.training.checkpoint``); SIGINT or
    SIGTERM then writes it at the current batch and raises
    ``checkpoint.TrainingInterrupted``. ``resume=True`` continues from it, and
    with the same seed ends with the same weights as an uninterrupted run
    (not bit-exact with ``augment``, whose crops are drawn in worker processes;
    an augmented epoch resumes from its start). The snapshot records the
    run's ``settings`` (a dict; the driver passes network, seed, data and
    schedule) together with the batch size, epochs, seed and a digest of the
    data, and a snapshot recording others is refused.

    ``distributed`` (a ``branchynet.training.distributed.Distributed``) trains data-
    parallel over MPI ranks: ``batchsize`` stays the global batch, each rank
    steps on its part, the curves are summed over ranks, only rank 0 reports
    progress and writes the snapshot (which records the number of ranks: a
    resume with another number is refused), and every rank resumes from rank
    0's snapshot.

    Training beyond the original's recipe (each None: the network's own
    setting stays, which is the original's unless changed): ``exit_weights``
    (one loss weight per exit, ``BranchyNet.exit_weights``);
    ``distill_weight`` and ``distill_temperature`` (self-distillation of the
    early exits from the last one's softened output, ``net.distillation_loss``;
    weight 0 turns it off, the temperature defaults to
    ``DEFAULT_DISTILL_TEMPERATURE`` and lies in ``DISTILL_TEMPERATURES``);
    ``adam_beta1`` (Adam's beta1, 0.9 in the original code, 0.99 in the
    paper); ``lr_schedule`` ('constant', the original's, or 'cosine': the
    step size, Adam's alpha or SGD's lr, falls from the network's value to 0
    along a half cosine over this call's batches, see ``lr_factor``);
    ``shift`` (n > 0: every training image moves by a random offset in
    [-n, n] pixels along each axis, n at most half the images' smaller side
    (``max_shift``), drawn per epoch from the seed (0 when ``seed`` is None),
    ``branchynet.augment.epoch_shifts``; works with ``distributed`` and
    resumes exactly); ``flip`` (True: every training image is mirrored left
    to right with probability 1/2, drawn per epoch from the seed,
    ``branchynet.augment.epoch_flips``; combines with ``shift``, works with
    ``distributed`` and resumes exactly). See ``apply_recipe``; the settings that differ
    from the original's are recorded in the snapshot.

    Returns ``(losses, accs, seconds)``: ``losses[epoch][exit]`` and
    ``accs[epoch][exit]`` are per-epoch means over the batches (one exit,
    the last, for main-only training) and ``seconds`` the time of this call.
    """
    from branchynet.training import checkpoint
    validate_inputs(x, net.input_shape)
    validate_labels(y, len(x))
    if batchsize < 1 or num_epoch < 0:
        raise InvalidValue('batchsize must be >= 1 and num_epoch >= 0, got {} and {}'
                         .format(batchsize, num_epoch))
    _check_snapshot_path(snapshot, resume)
    dist, root = distributed, distributed is None or distributed.is_root
    if dist is not None and augment:
        raise InvalidValue('augment=True is not supported in distributed training (the '
                           'augmented batches are drawn per process, not shared by ranks)')
    n_batches = (len(x) + batchsize - 1) // batchsize
    settings = dict(settings or {}, phase='main' if main else 'joint', batchsize=batchsize,
                    seed=seed, augment=bool(augment), mpi_ranks=1 if dist is None else dist.size,
                    data=checkpoint.data_digest(x, y))
    settings.update(apply_recipe(net, main, exit_weights, distill_weight,
                                 distill_temperature, adam_beta1, lr_schedule, shift,
                                 flip))
    shift, flip = settings.get('shift', 0), settings.get('flip', False)
    check_shift(shift, augment)
    check_flip(flip, augment)
    for name, on in (('shift moves', shift), ('flip mirrors', flip)):
        if on and numpy.ndim(x) != 4:
            raise InvalidValue('{} images: it needs inputs of shape (N, C, H, W), got '
                               '{}'.format(name, numpy.shape(x)))
    check_shift(shift, image_shape=numpy.shape(x)[1:])
    rate = _StepSize(net, settings.get('lr_schedule', 'constant'), num_epoch * n_batches)
    rng = numpy.random.RandomState(seed)
    if dist is not None:
        dist.setup(net)
        progress = progress and root
    augmenter = None
    if augment:
        from branchynet.augment import AugmentedBatches
        augmenter = AugmentedBatches(x, y, batchsize, seed=rng.randint(2 ** 31 - 1))
    step = net.train_main if main else net.train
    losses, accs, first_epoch, order, next_batch, sums = [], [], 0, None, 0, None
    checks = dict(settings=settings, num_epoch=num_epoch, n_samples=len(x), batchsize=batchsize,
                  width=1 if main else net.numexits())
    at = None
    if resume and dist is not None:
        at = dist.load_snapshot(snapshot, net, rng, **checks)
    elif resume and checkpoint.exists(snapshot):
        at = checkpoint.load(snapshot, net, rng, **checks)
    if at is not None:
        first_epoch, losses, accs, order, next_batch, sums = (
            at.epoch, at.losses, at.accs, at.order, at.next_batch, at.sums)
        if root:
            print('resuming {} training from epoch {}, batch {} ({})'.format(
                'main' if main else 'joint', at.epoch + 1, at.next_batch + 1, snapshot),
                file=sys.stderr, flush=True)
    elif resume and root:
        print('no snapshot {}: starting {} training afresh'.format(
            snapshot, 'main' if main else 'joint'), file=sys.stderr, flush=True)
    if at is None and augment and snapshot:  # an augmented epoch resumes from its start
        checkpoint.save(snapshot, net, rng, 0, [], [], settings=settings)
    start = time.perf_counter()
    desc = 'main' if main else 'joint'
    last_good = _LastGood(net)
    guard = checkpoint.stop_requests() if snapshot else _no_stop_requests()
    with guard as stop, rate:
        for epoch in range(first_epoch, num_epoch):
            if dist is not None:
                dist.epoch_start(epoch, seed)
            if augmenter is None:
                if order is None:
                    order, next_batch = rng.permutation(len(x)), 0
                offsets = epoch_shifts(seed, epoch, len(x), shift) if shift else None
                flips = epoch_flips(seed, epoch, len(x)) if flip else None
                batches = _index_batches(x, y, order, batchsize, next_batch, n_batches, dist,
                                         offsets, shift, flips)
            else:
                batches = ((b, xb, yb, len(yb)) for b, (xb, yb) in enumerate(augmenter.epoch()))
            sums_loss, sums_acc, weights = sums if sums is not None else (0., 0., 0)
            sums = None
            last_good.keep()
            with Progress(n_batches, '{} epoch {}/{}'.format(desc, epoch + 1, num_epoch),
                          unit='batch', enabled=progress) as bar:
                bar.update(next_batch if augmenter is None else 0)
                for b, xb, yb, count in batches:
                    rate.set(epoch * n_batches + b)
                    loss, acc = step(xb, yb)
                    last_good.check(epoch, b)
                    loss, acc = numpy.atleast_1d(loss), numpy.atleast_1d(acc)
                    sums_loss = sums_loss + loss * count
                    sums_acc = sums_acc + acc * count
                    weights += count
                    bar.update(1, loss=float(numpy.nansum(loss)))
                    stopping = stop['signal'] is not None
                    if dist is not None and snapshot:  # every rank stops at the same batch
                        stopping = dist.any_rank(stopping)
                    if stopping:
                        if augmenter is not None:  # the last epoch-start snapshot stands
                            raise checkpoint.TrainingInterrupted(
                                snapshot, ' at the start of epoch {} (an augmented epoch '
                                'restarts from its beginning)'.format(epoch + 1))
                        last_good.check(epoch, b, moments=True)
                        sums = (sums_loss, sums_acc, weights)
                        if dist is not None:  # the epoch's sums so far over all ranks
                            sums = dist.reduce_sums(*sums)
                        if root:
                            checkpoint.save(snapshot, net, rng, epoch, losses, accs, order,
                                            b + 1, sums=sums, settings=settings)
                        raise checkpoint.TrainingInterrupted(snapshot)
            if dist is not None:
                sums_loss, sums_acc, weights = dist.reduce_sums(sums_loss, sums_acc, weights)
                dist.epoch_end(net)
            last_good.check(epoch, n_batches - 1, moments=True)  # before the snapshot
            losses.append((sums_loss / max(weights, 1)).tolist())
            accs.append((sums_acc / max(weights, 1)).tolist())
            order, next_batch = None, 0
            if snapshot and root:
                checkpoint.save(snapshot, net, rng, epoch + 1, losses, accs, settings=settings)
            if on_epoch_end is not None:
                on_epoch_end(epoch, losses[-1], accs[-1])
    return losses, accs, time.perf_counter() - start


def apply_recipe(net, main=False, exit_weights=None, distill_weight=None,
                 distill_temperature=None, adam_beta1=None, lr_schedule=None, shift=None,
                 flip=None):
    """Set the training options of ``train_exits`` on ``net``, checked.

    Returns the options that differ from the original's recipe and matter
    to this phase (for the main network alone, only Adam's beta1), as the
    plain values a snapshot records; the original's recipe returns ``{}``,
    so its snapshots read as before.
    """
    if exit_weights is not None:
        net.exit_weights = exit_weights
    temperature = check_distillation(distill_weight, distill_temperature)
    if distill_weight is not None:
        keeps = net.percentTrainKeeps
        if distill_weight > 0 and any(k < 1 for k in numpy.atleast_1d(keeps)):
            raise InvalidValue('self-distillation needs every exit to see every sample, '
                               'but percentTrainKeeps is {!r}; set it to 1'.format(keeps))
        net.distillation = (float(temperature), float(distill_weight)) \
            if distill_weight > 0 else None
    if adam_beta1 is not None:
        if net.opt != 'Adam':
            raise InvalidValue("adam_beta1 needs opt='Adam', this network trains with "
                               '{}'.format(net.opt))
        if not (is_real_number(adam_beta1) and 0 <= adam_beta1 < 1):
            raise InvalidValue('adam_beta1 must be a number in [0, 1), got {!r}'.format(
                adam_beta1))
        net.ensure_optimizer().hyperparam.beta1 = float(adam_beta1)
    if lr_schedule is not None and lr_schedule not in LR_SCHEDULES:
        raise InvalidValue('lr_schedule must be one of {}, got {!r}'.format(
            ', '.join(LR_SCHEDULES), lr_schedule))
    check_shift(shift)
    check_flip(flip)
    recorded = {}
    if lr_schedule not in (None, 'constant'):
        recorded['lr_schedule'] = lr_schedule
    if shift:
        recorded['shift'] = int(shift)
    if flip:
        recorded['flip'] = True
    beta1 = getattr(net.ensure_optimizer().hyperparam, 'beta1', None)
    if beta1 is not None and beta1 != ORIGINAL_ADAM_BETA1:
        recorded['adam_beta1'] = float(beta1)
    if not main:
        if net.exit_weights != [getattr(b, 'weight', 1.0) for b in net.branches]:
            recorded['exit_weights'] = list(net.exit_weights)
        distill = getattr(net, 'distillation', None)
        if distill is not None:
            recorded['distill_temperature'], recorded['distill_weight'] = distill
    return recorded


def check_distillation(weight, temperature, names=('distill_weight', 'distill_temperature')):
    """The temperature self-distillation with ``weight`` uses (None when
    ``weight`` is None), after checking both: the weight a finite number
    >= 0, the temperature (default ``DEFAULT_DISTILL_TEMPERATURE``) a
    number in ``DISTILL_TEMPERATURES``; ``names`` name them in the error (the
    driver passes its options' names)."""
    if weight is None:
        if temperature is not None:
            raise InvalidValue('{} needs {} (a weight > 0 turns self-distillation on)'.format(
                names[1], names[0]))
        return None
    if not (is_real_number(weight) and 0 <= weight < float('inf')):
        raise InvalidValue('{} must be a finite number >= 0 (0: off), got {!r}'.format(
            names[0], weight))
    temperature = DEFAULT_DISTILL_TEMPERATURE if temperature is None else temperature
    low, high = DISTILL_TEMPERATURES
    if not (is_real_number(temperature) and low <= temperature <= high):
        raise InvalidValue('{} must be a number in [{:g}, {:g}] (a softening temperature; '
                           'default {:g}), got {!r}'.format(names[1], low, high,
                                                            DEFAULT_DISTILL_TEMPERATURE,
                                                            temperature))
    return temperature


def max_shift(image_shape):
    """The largest ``shift`` for images of ``image_shape`` ``(C, H, W)``: half
    the smaller side, so every shifted image keeps at least half its rows and
    columns (at H pixels or more, an image moves wholly out of view)."""
    return min(image_shape[-2:]) // 2


def check_flip(flip, augment=False, names=('flip', 'augment')):
    """``flip`` is None or a bool, not combined with ``augment`` (whose
    variants are already mirrored at random); ``names`` name them in the error."""
    if flip is not None and not isinstance(flip, (bool, numpy.bool_)):
        raise InvalidValue('{} must be True or False, got {!r}'.format(names[0], flip))
    if flip and augment:
        raise InvalidValue('{} and {} are alternatives: {} already mirrors images at '
                           'random'.format(names[0], names[1], names[1]))


def check_shift(shift, augment=False, names=('shift', 'augment'), image_shape=None):
    """``shift`` is None or a whole number of pixels >= 0, not combined with
    ``augment`` (the two are alternatives) and, with ``image_shape`` (one
    sample's ``(C, H, W)``), at most ``max_shift``; ``names`` name them in the
    error (the driver passes its options' names)."""
    if shift is not None and (isinstance(shift, bool) or not isinstance(shift, numbers.Integral)
                              or shift < 0):
        raise InvalidValue('{} must be a whole number of pixels >= 0 (0: off), got '
                           '{!r}'.format(names[0], shift))
    if shift and augment:
        raise InvalidValue('{} and {} are alternatives: choose one'.format(*names))
    if shift and image_shape is not None and shift > max_shift(image_shape):
        raise InvalidValue('{} must be at most {} pixels for {}x{} images (half the smaller '
                           'side: a larger shift moves most of an image out of view), got '
                           '{}'.format(names[0], max_shift(image_shape), image_shape[-2],
                                       image_shape[-1], shift))


def lr_factor(schedule, step, total):
    """The step size of batch ``step`` (0-based) of ``total``, as a fraction of
    the network's: 1 for 'constant'; for 'cosine', (1 + cos(pi step / total)) / 2,
    which starts at 1 and nears 0 at the last batch."""
    if schedule == 'constant' or total <= 0:
        return 1.0
    return 0.5 * (1.0 + numpy.cos(numpy.pi * step / total))


class _StepSize:
    """Sets the optimizer's step size (Adam's alpha, SGD's lr) per batch from
    ``lr_factor``; a function of the batch's position only, so a resumed run
    steps exactly as an uninterrupted one. Leaving the ``with`` block puts the
    network's own value back."""

    def __init__(self, net, schedule, total):
        self.schedule, self.total = schedule, total
        self.optimizer = net.ensure_optimizer()
        self.name = 'alpha' if hasattr(self.optimizer.hyperparam, 'alpha') else 'lr'
        self.base = getattr(self.optimizer.hyperparam, self.name)

    def set(self, step):
        if self.schedule != 'constant':
            setattr(self.optimizer.hyperparam, self.name,
                    self.base * lr_factor(self.schedule, step, self.total))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        setattr(self.optimizer.hyperparam, self.name, self.base)
        return False


def _check_snapshot_path(snapshot, resume):
    """``snapshot`` names a file (or is None); ``resume`` needs one."""
    if snapshot is not None and not isinstance(snapshot, (str, os.PathLike)):
        raise InvalidType('snapshot must be a file path (str or os.PathLike), got {}'.format(
            type(snapshot).__name__))
    if snapshot is not None and os.path.isdir(snapshot):
        raise InvalidValue('snapshot={} is a folder; expected the path of a snapshot file '
                           '(e.g. <folder>/net.snapshot.npz)'.format(os.fspath(snapshot)))
    if resume and snapshot is None:
        raise InvalidValue('resume=True needs snapshot=<file> to resume from')


def _index_batches(x, y, order, batchsize, first, n_batches, dist, offsets=None, shift=0,
                   flips=None):
    """``(b, x_b, y_b, count)`` of the shuffled batches from ``first`` on; with
    ``dist``, this rank's part of every global batch (``count`` its weight);
    with ``offsets``, every image moved by its sample's offset (``shift_batch``);
    with ``flips``, the images whose flag is set mirrored (``flip_batch``)."""
    for b in range(first, n_batches):
        idx = order[b * batchsize:(b + 1) * batchsize]
        count = len(idx)
        if dist is not None:
            idx, count = dist.local_part(idx)
        xb = x[idx] if offsets is None else shift_batch(x[idx], offsets[idx], shift)
        if flips is not None:  # xb is a copy (x[idx] or shift_batch's output)
            xb = flip_batch(xb, flips[idx])
        yield b, xb, y[idx], count


class _LastGood:
    """Host copies of the model's and optimizer's state at an epoch start (the
    last snapshot's state), put back when an update with a finite loss made
    weights NaN or infinite (e.g. Adam overflowing on data of 1e30), or, at
    an epoch end or before an interrupted epoch's snapshot, made the
    optimizer's state (Adam's moments) NaN or infinite while the weights
    stayed finite, so neither the model in memory nor any file written from
    it is damaged."""

    def __init__(self, net):
        self.net, self.state = net, None

    def keep(self):
        serializer = chainer.serializers.DictionarySerializer()
        serializer['model'].save(self.net)
        if self.net.optimizer is not None:
            serializer['optimizer'].save(self.net.optimizer)
        self.state = {k: numpy.array(v, copy=True) for k, v in serializer.target.items()}

    def check(self, epoch, batch, moments=False):
        """Raise ``NonFiniteWeights`` with the state put back when a weight
        (or with ``moments``, an optimizer state array) is NaN or infinite."""
        bad = nonfinite_params(self.net)
        state = nonfinite_optimizer_state(self.net.optimizer) if moments and not bad else []
        if not bad and not state:
            return
        self._restore()
        what = '{} weight array(s) NaN or infinite ({}{}) although the loss was finite'.format(
            len(bad), ', '.join(bad[:3]), ', ...' if len(bad) > 3 else '') if bad else \
            '{} optimizer state array(s) NaN or infinite ({}{}) although the loss and the ' \
            'weights were finite'.format(len(state), ', '.join(state[:3]),
                                         ', ...' if len(state) > 3 else '')
        raise NonFiniteWeights(
            'the update{} of epoch {} {}batch {} made {}, so training stopped; the weights '
            'were put back to the start of that epoch (the last snapshot, if any, is intact): '
            'check the data for huge values and the learning rate (alpha)'.format(
                's' if state else '', epoch + 1, 'up to ' if state else '', batch + 1, what))

    def _restore(self):
        chainer.serializers.NpzDeserializer(self.state, path='model/').load(self.net)
        optimizer = self.net.optimizer
        if optimizer is None:
            return
        chainer.serializers.NpzDeserializer(self.state, path='optimizer/',
                                            strict=False).load(optimizer)
        # state made during the epoch (a parameter's first update) starts
        # again as new, from zeros
        for name, param in self.net.namedparams():
            rule = getattr(param, 'update_rule', None)
            for key, array in ((rule.state or {}).items() if rule is not None else ()):
                if 'optimizer{}/{}'.format(name, key) not in self.state:
                    array[...] = 0


class _no_stop_requests:
    """Stands in for ``checkpoint.stop_requests`` when there is no snapshot to write."""

    def __enter__(self):
        return {'signal': None}

    def __exit__(self, *exc):
        return False
