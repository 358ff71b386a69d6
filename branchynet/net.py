"""BranchyNet: a network with early-exit branches, as a Chainer link tree.

The network is described, as in the original project, by a flat list of
layers in which ``Branch([...])`` entries mark branch points::

    [conv1, Branch([head-1 layers]), pool, relu, ..., fc, Branch([final head])]

Unlike the original (which kept a deep copy of the trunk per exit and
synchronised the copies by hand), the trunk is held once, in ``self.trunk``,
and every exit head reads the trunk's activation at its branch point. A
forward pass computes each trunk segment once, whatever the number of exits.

Exit ``n`` (0-based) is ``branches[n](trunk[:branch_points[n]](x))``; the last
exit is the main network's own classifier, so ``trunk`` plus ``branches[-1]``
is the baseline network.
"""
import math
import time

import chainer
import chainer.functions as F
import numpy

from branchynet.measures import confidence
from branchynet.engines.base import DEFAULT_BATCHSIZE, ChainerEngine
from branchynet.links import FL, Branch, Net
from branchynet.measures.timing import synchronize
from branchynet.optimizers import Adam
from branchynet.validation import (InvalidType, InvalidValue, as_labels, is_real_number,
                                   validate_inputs, validate_labels,
                                   validate_thresholds, validate_weights)

#: Parameter-free functions with no randomness and no train/test difference:
#: a head may share such layers with the trunk (``BranchyNet.shared_prefix``).
SHAREABLE_FUNCTIONS = (F.relu, F.leaky_relu, F.elu, F.tanh, F.sigmoid, F.max_pooling_2d,
                       F.average_pooling_2d, F.local_response_normalization)


def _same_function_layer(a, b):
    """Whether two layers compute the same deterministic, parameter-free function."""
    if not (type(a) is FL and type(b) is FL and a.fn is b.fn
            and a.fn in SHAREABLE_FUNCTIONS):
        return False
    try:
        return bool(a.args == b.args and a.kwargs == b.kwargs)
    except (TypeError, ValueError):  # arguments that do not compare (arrays)
        return False


class NonFiniteLoss(InvalidValue):
    """The training loss became NaN or infinite; the weights were not updated."""


def _check_finite_loss(loss):
    value = float(loss.array)
    if not math.isfinite(value):
        raise NonFiniteLoss(
            'the training loss is {} on this batch, so training stopped before updating '
            'the weights (the last snapshot, if any, is intact): check the data for huge '
            'or non-finite values and the learning rate (alpha) and exit_weights'.format(value))


def distillation_loss(logits, temperature):
    """Self-distillation of the early exits from the last (Phuong and Lampert,
    ICCV 2019): ``T^2 * sum_n KL(softmax(z_last / T) || softmax(z_n / T))``
    over the early exits' logits ``z_n``, each a batch mean.

    The teacher's softened output is a constant here, so this term sends no
    gradient into the last exit (nor, through it, into the trunk). Every
    exit must have seen the same samples (``percentTrainKeeps`` 1).
    """
    teacher = logits[-1].array / temperature
    if any(len(z) != len(teacher) for z in logits[:-1]):
        raise InvalidValue('self-distillation needs every exit to see every sample of '
                           'the batch (percentTrainKeeps=1)')
    log_p = teacher - F.logsumexp(teacher, axis=1).array[:, None]
    p = F.exp(log_p).array
    total = 0
    for z in logits[:-1]:
        log_q = F.log_softmax(z / temperature)
        total = total - F.sum((log_q - log_p) * p) / len(teacher)
    return temperature ** 2 * total


class BranchyNet(chainer.Chain):
    """Trunk plus exit heads, with joint training and early-exit inference.

    Args:
        network: flat list of links; each ``Branch`` marks a branch point
            and holds that exit's head; the list must end with a ``Branch``
            (the main network's classifier).
        thresholdExits: entropy thresholds (nats) of the early exits: a
            scalar for all of them or one value per early exit. A sample
            leaves at the first early exit whose entropy is strictly below
            its threshold; the last exit classifies whatever remains.
        percentTestExits: with no thresholds set, the share of the samples
            reaching each early exit that leave there (the lowest-entropy
            ones), as the original's fallback; a number or one per early exit.
        percentTrainKeeps: share of each batch passed on from an early exit
            to later exits during joint training; the most confident samples
            (lowest entropy) leave. 1 trains every exit on every sample. A
            number applies to the samples reaching each early exit; a list
            (one per early exit) is a share of the whole batch, as the
            original read a list.
        lr, momentum, weight_decay: MomentumSGD settings (``opt='MomentumSGD'``).
        alpha: Adam's step size (``opt='Adam'``, the default).
        joint: with True (the default) ``train`` trains the trunk on every
            exit's loss; with False, as the original's separate training,
            only the last exit's loss reaches the trunk and each early head
            trains on the trunk's activation without changing the trunk.
        verbose: print progress of routing decisions.
        exit_weights: weight ``w_n`` of every exit's loss in joint training;
            default the ``weight`` of each ``Branch`` (1.0 unless given, as
            the original ran; the paper suggests 1.0 for early exits and 0.3
            for the last).
        input_shape: per-sample shape ``(C, H, W)``; when given, inputs are
            checked against it with a clear error.
        confidence: the exit measure: ``'entropy'`` (the paper's: exit when
            entropy < T), ``'maxprob'`` (largest probability > T) or
            ``'margin'`` (largest minus second probability > T).
    """

    def __init__(self, network, thresholdExits=None, percentTestExits=.9,
                 percentTrainKeeps=1., lr=0.1, momentum=0.9, weight_decay=0.0001,
                 alpha=0.001, opt='Adam', joint=True, verbose=False,
                 exit_weights=None, input_shape=None, confidence='entropy'):
        super().__init__()
        trunk_layers, heads, branch_points = self._parse(network)
        with self.init_scope():
            self.trunk = Net(trunk_layers).named('the trunk (Branch entries not counted)')
            self.branches = chainer.ChainList(*heads)
        self.branch_points = branch_points
        self.percentTestExits = percentTestExits
        self.percentTrainKeeps = percentTrainKeeps
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.alpha = alpha
        if opt not in ('Adam', 'MomentumSGD'):
            raise InvalidValue("opt must be 'Adam' or 'MomentumSGD', got {!r}".format(opt))
        self.opt = opt
        self.joint = joint
        #: The original's switch: when not None, ``train`` also trains the main
        #: network (trunk and final head) on the whole batch; see ``_detached``.
        self.forwardMain = None
        self.verbose = verbose
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.exit_weights = exit_weights
        self.confidence = confidence
        self.thresholdExits = thresholdExits
        self._train_mode = True
        self.optimizer = None

    # ------------------------------------------------------------------ set-up
    @staticmethod
    def _parse(network):
        if isinstance(network, (chainer.Link, str, bytes)) or not hasattr(network, '__iter__'):
            raise InvalidType('network must be a list of links with Branch markers, '
                            'got {}'.format(type(network).__name__))
        trunk_layers, heads, branch_points = [], [], []
        for layer in network:
            if isinstance(layer, Branch):
                heads.append(layer.named("exit {}'s head".format(len(heads) + 1)))
                branch_points.append(len(trunk_layers))
            elif isinstance(layer, chainer.Link):
                trunk_layers.append(layer)
            else:
                raise InvalidType('network entries must be chainer Links (wrap functions '
                                'in FL), got {!r}'.format(layer))
        if not heads or not isinstance(list(network)[-1], Branch):
            raise InvalidValue('network must end with a Branch holding the main '
                             "network's final classifier")
        return trunk_layers, heads, branch_points

    @property
    def thresholdExits(self):
        """Per-early-exit entropy thresholds (list of floats), or None."""
        return self._thresholds

    @thresholdExits.setter
    def thresholdExits(self, value):
        self._thresholds = None if value is None else validate_thresholds(
            value, self.numexits() - 1, upper=confidence.get_measure(self.confidence).upper)

    @property
    def confidence(self):
        """Name of the confidence measure used for exit decisions."""
        return self._confidence

    @confidence.setter
    def confidence(self, name):
        measure = confidence.get_measure(name)
        self._confidence = measure.name
        if getattr(self, '_thresholds', None) is not None:
            self.thresholdExits = self._thresholds  # re-validate for the new range

    @property
    def percentTrainKeeps(self):
        return self._percent_train_keeps

    @percentTrainKeeps.setter
    def percentTrainKeeps(self, value):
        self._percent_train_keeps = self._shares(value, 'percentTrainKeeps')

    def _shares(self, value, name):
        """A share in [0, 1] (float) or a list of one per early exit."""
        def share(v):
            return is_real_number(v) and 0 <= v <= 1
        early = self.numexits() - 1
        if share(value):
            return float(value)
        if isinstance(value, (list, tuple)) and len(value) in (early, early + 1) and \
                all(share(v) for v in value):
            return [float(v) for v in value[:early]]
        raise InvalidValue('{} must be a number in [0, 1] or a list of {} such numbers (one '
                           'per early exit), got {!r}'.format(name, early, value))

    @property
    def exit_weights(self):
        return self._exit_weights

    @exit_weights.setter
    def exit_weights(self, value):
        n = self.numexits()
        if value is None:
            value = [getattr(b, 'weight', 1.0) for b in self.branches]
        self._exit_weights = validate_weights(value, n)

    def num_classes(self, x):
        """Number of classes (the final exit's outputs), found with one sample
        of ``x`` the first time and remembered."""
        n = getattr(self, '_num_classes', None)
        if n is None:
            with chainer.using_config('train', False), chainer.no_backprop_mode():
                n = int(self.branches[-1](self.trunk(self.send(x[:1]))).shape[1])
            self._num_classes = n
        return n

    def numexits(self):
        """Number of exits, the main network's final exit included."""
        return len(self.branches)

    def training(self):
        """Set the default mode of ``forward`` to training (original API)."""
        self._train_mode = True

    def testing(self):
        """Set the default mode of ``forward`` to testing (original API)."""
        self._train_mode = False

    @property
    def shared_prefix(self):
        """Per exit, how many leading layers of its head repeat the trunk's.

        B-LeNet's exit-1 head starts with the same pool and ReLU as the trunk
        after the branch point (B-AlexNet's with ReLU, pool and LRN). Such
        parameter-free, deterministic layers are computed once, in the
        trunk, and the head starts after them: the same outputs, less work
        in training and for samples that go on past the exit. Derived from
        the layers (so models pickled before it existed load unchanged).
        """
        if getattr(self, '_shared_prefix', None) is not None:
            return self._shared_prefix
        shared = []
        for n, head in enumerate(self.branches):
            k = 0
            if n < len(self.branches) - 1:
                limit = self.branch_points[n + 1] - self.branch_points[n]
                while k < min(limit, len(head)) and _same_function_layer(
                        head[k], self.trunk[self.branch_points[n] + k]):
                    k += 1
            shared.append(k)
        self._shared_prefix = shared
        return shared

    def segment_bounds(self, n):
        """Trunk slice of segment ``n``; it ends after the layers it shares
        with exit n's head (``shared_prefix``)."""
        start = self.branch_points[n - 1] + self.shared_prefix[n - 1] if n > 0 else 0
        return start, self.branch_points[n] + self.shared_prefix[n]

    def segment(self, h, n):
        """Run trunk segment ``n``: from branch point n-1 to branch point n."""
        start, end = self.segment_bounds(n)
        return self.trunk(h, start, end)

    def head_links(self, n):
        """The layers exit ``n``'s head runs after segment ``n``."""
        return list(self.branches[n])[self.shared_prefix[n]:]

    def head(self, h, n):
        """Exit ``n``'s logits from segment ``n``'s output."""
        return self.branches[n](h, self.shared_prefix[n])

    def main_links(self):
        """Links of the baseline (main) network: the trunk and the final head."""
        return [self.trunk, self.branches[-1]]

    def ensure_optimizer(self):
        if self.optimizer is None:
            if self.opt == 'Adam':
                optimizer = Adam(alpha=self.alpha)
                optimizer.setup(self)
            else:
                optimizer = chainer.optimizers.MomentumSGD(lr=self.lr, momentum=self.momentum)
                optimizer.setup(self)
                optimizer.add_hook(chainer.optimizer_hooks.WeightDecay(self.weight_decay))
            self.optimizer = optimizer
        return self.optimizer

    # ---------------------------------------------------------------- forward
    def forward(self, x):
        """All exits' logits (list of Variables) for ``x``, trunk computed once.

        Runs in test mode when ``testing()`` was called or when
        ``chainer.config.train`` is False (``chainer.using_config('train',
        False)``, Chainer's evaluators): dropout off, batch normalisation
        with its population statistics. Otherwise in training mode.
        """
        with chainer.using_config('train', self._train_mode and chainer.config.train):
            return self._all_exit_logits(x)

    def _all_exit_logits(self, x):
        outputs, h = [], x
        for n in range(self.numexits()):
            h = self.segment(h, n)
            outputs.append(self.head(h, n))
        return outputs

    # --------------------------------------------------------------- training
    def _check_batch(self, x, t):
        """Check a training batch; returns the labels as int32."""
        validate_inputs(x, self.input_shape)
        return as_labels(t, len(x))

    def train_main(self, x, t):
        """One optimisation step of the main network alone.

        The branch heads' parameters are left untouched (their update rules
        are disabled for the step, so not even Adam's step counter moves).
        Returns ``(loss, accuracy)`` as floats.
        """
        t = self._check_batch(x, t)
        optimizer = self.ensure_optimizer()
        x, t = self.send(x), self.send(t)
        with chainer.using_config('train', True):
            h = self.trunk(x)
            z = self.branches[-1](h)
            validate_labels(t, len(x), z.shape[1])
            loss = F.softmax_cross_entropy(z, t)
            acc = F.accuracy(z, t)
        _check_finite_loss(loss)
        self.cleargrads()
        loss.backward()
        heads = [p for head in self.branches[:-1] for p in head.params()]
        saved = [(p.update_rule, p.update_rule.enabled) for p in heads if p.update_rule]
        for rule, _ in saved:
            rule.enabled = False
        try:
            optimizer.update()
        finally:
            for rule, enabled in saved:
                rule.enabled = enabled
        return float(loss.array), float(acc.array)

    def _detached(self, n):
        """Whether exit ``n``'s loss stops at its head (does not reach the trunk).

        As the original: with ``joint=False`` only the last exit trains the
        trunk; with ``forwardMain`` set and joint training, the main network's
        loss trains the trunk in the last exit's place."""
        last = self.numexits() - 1
        if n < last:
            return not self.joint
        return self.joint and getattr(self, 'forwardMain', None) is not None

    def _joint_losses(self, x, t, logits=None):
        """Per-exit losses and accuracies with the percentTrainKeeps hand-off
        (every exit's logits appended to ``logits`` when it is a list)."""
        losses, accs, h = [], [], x
        last = self.numexits() - 1
        shares, batch = self.percentTrainKeeps, len(t)
        for n in range(self.numexits()):
            h = self.segment(h, n)
            z = self.head(h.array if self._detached(n) else h, n)
            if n == 0:
                validate_labels(t, len(t), z.shape[1])
            losses.append(F.softmax_cross_entropy(z, t))
            accs.append(F.accuracy(z, t))
            if logits is not None:
                logits.append(z)
            keep = len(t)
            if n < last:
                keep = min(len(t), int(math.ceil(shares[n] * batch))) \
                    if isinstance(shares, list) else int(math.ceil(shares * len(t)))
            if keep < len(t):
                if keep == 0:
                    break
                ent = confidence.entropy(F.softmax(z).array)
                order = self.xp.argsort(-ent, kind='stable') if self.xp is numpy \
                    else self.xp.argsort(-ent)
                idx = order[:keep]
                h, t = h[idx], t[idx]
        return losses, accs

    def train(self, x, t):
        """One joint optimisation step over every exit.

        The loss is ``sum_n exit_weights[n] * CE_n`` (which of them reach the
        trunk: ``joint``, ``forwardMain``), plus with ``distillation =
        (temperature, weight)`` the self-distillation term of
        ``distillation_loss``; returns the per-exit losses and accuracies
        (lists of floats, NaN for exits that received no samples because of
        ``percentTrainKeeps``).
        """
        t = self._check_batch(x, t)
        optimizer = self.ensure_optimizer()
        x, t = self.send(x), self.send(t)
        distill, logits = getattr(self, 'distillation', None), []
        with chainer.using_config('train', True):
            losses, accs = self._joint_losses(x, t, logits)
            total = sum(w * loss for w, loss in zip(self.exit_weights, losses))
            if distill is not None:
                total = total + distill[1] * distillation_loss(logits, distill[0])
            if getattr(self, 'forwardMain', None) is not None:
                total += F.softmax_cross_entropy(self.branches[-1](self.trunk(x)), t)
        _check_finite_loss(total)
        self.cleargrads()
        total.backward()
        optimizer.update()
        pad = [float('nan')] * (self.numexits() - len(losses))
        return ([float(v.array) for v in losses] + pad,
                [float(v.array) for v in accs] + pad)

    # -------------------------------------------------------------- inference
    def chainer_engine(self):
        """This model's links as an inference engine (``engine.ChainerEngine``):
        the batching loop and routing every engine shares."""
        return ChainerEngine(self)

    def get_SM(self, x, batchsize=DEFAULT_BATCHSIZE):
        """Softmax of every exit for every sample (no early exit).

        Returns a list with one numpy array ``(N, classes)`` per exit.
        """
        return self.chainer_engine().get_SM(x, batchsize)

    def get_logits(self, x, batchsize=DEFAULT_BATCHSIZE):
        """Logits of every exit for every sample (no early exit): a list of
        numpy arrays ``(N, classes)``, one per exit."""
        return self.chainer_engine().exit_logits(x, batchsize)

    def resolve_thresholds(self, thresholds):
        """``thresholds`` checked (one per early exit, within the confidence
        measure's range), or the model's ``thresholdExits`` when None."""
        if thresholds is None:
            if self._thresholds is None:
                raise InvalidValue('no thresholds: pass thresholds=... or set '
                                   'thresholdExits (one entropy per early exit)')
            return self._thresholds
        return validate_thresholds(thresholds, self.numexits() - 1, name='thresholds',
                                   upper=confidence.get_measure(self.confidence).upper)

    def send(self, x):
        """``x`` on this model's device."""
        return self.device.send(x)

    def predict(self, x, thresholds=None, batchsize=None):
        """Early-exit prediction.

        Args:
            x: float32 array ``(N, C, H, W)`` (numpy or cupy).
            thresholds: per-early-exit entropy thresholds; default
                ``thresholdExits``.
            batchsize: samples routed together (default
                ``DEFAULT_BATCHSIZE``). Any batch size gives the same result
                as batch size 1.

        Returns:
            ``(labels, exits)``: two int32 numpy arrays of length N; ``exits``
            holds the 0-based exit index that classified each sample.
        """
        return self.chainer_engine().predict(x, thresholds, batchsize)

    def predict_main(self, x, batchsize=None):
        """Labels from the main network alone (no early exit), as a numpy array."""
        return self.chainer_engine().predict_main(x, batchsize)

    def predict_percent(self, x, percents=None, batchsize=None):
        """Early-exit prediction by shares instead of thresholds (the original's
        fallback when no thresholds were set): in every batch (default: all
        of ``x`` as one, as the original, computed in chunks of
        ``DEFAULT_BATCHSIZE`` samples so memory stays bounded), each early
        exit classifies the ``percents`` share (default ``percentTestExits``)
        of the samples reaching it with the lowest entropy; a list gives one
        share of the whole batch per early exit. Returns ``(labels, exits)``
        as ``predict``.
        """
        validate_inputs(x, self.input_shape)
        shares = self._shares(self.percentTestExits if percents is None else percents,
                              'percentTestExits')
        return self.chainer_engine().predict_by_share(x, shares, batchsize)

    @property
    def gpu(self):
        """True when the parameters live on a GPU (the original's attribute)."""
        return self.xp is not numpy

    def calibrate(self, x_val, y_val, target_acc=None, budget=None, measure='entropy',
                  engine=None, **kwargs):
        """Choose, set and return exit thresholds on validation data: the
        cheapest reaching ``target_acc`` (default the last exit's validation
        accuracy) or the most accurate within ``budget`` (ms per sample at
        batch size 1 on ``engine``, default this model's Chainer path).
        Sets ``confidence`` to ``measure`` and ``thresholdExits``; returns
        a dict with ``thresholds``, ``acc``, ``cost`` (ms), ``exit_counts``
        and ``met``. See ``calibration.calibrate`` for the options."""
        from branchynet.evaluation import calibration
        return calibration.calibrate(self, x_val, y_val, target_acc=target_acc, budget=budget,
                                     measure=measure, engine=engine, **kwargs)

    def find_thresholds_entropies(self, x_train, y_train=None, percentTrainKeeps=0.5,
                                  batchsize=1024):
        """Per early exit, the entropy threshold that lets the most confident
        ``1 - percentTrainKeeps`` share of ``x_train`` leave there (every
        sample evaluated at every exit, test mode), and the entropies.

        Returns ``(thresholds, entropies)``: a list of floats and one array of
        entropies per early exit. ``y_train`` is not used (the original's
        signature).
        """
        shares = self._shares(percentTrainKeeps, 'percentTrainKeeps')
        logits = self.get_logits(x_train, batchsize=batchsize)[:-1]
        thresholds, entropies = [], []
        for n, z in enumerate(logits):
            ent = confidence.entropy_from_logits(z)
            share = shares[n] if isinstance(shares, list) else shares
            leave = int(len(ent) - share * len(ent))
            thresholds.append(float(numpy.sort(ent)[min(leave, len(ent) - 1)]))
            entropies.append(ent)
        return thresholds, entropies

    def find_thresholds(self, x_train, y_train=None, percentTrainKeeps=0.5, batchsize=1024):
        """The thresholds of ``find_thresholds_entropies``."""
        return self.find_thresholds_entropies(x_train, y_train, percentTrainKeeps,
                                              batchsize)[0]

    def find_entropies(self, x_train, y_train=None, percentTrainKeeps=0.5, batchsize=1024):
        """The entropies of ``find_thresholds_entropies``."""
        return self.find_thresholds_entropies(x_train, y_train, percentTrainKeeps,
                                              batchsize)[1]

    def print_models(self):
        """Print every exit head with its branch point, then the trunk."""
        for n, head in enumerate(self.branches):
            print('---- exit {} after trunk layer {}'.format(n + 1, self.branch_points[n]))
            for link in head:
                print(link)
        print('---- trunk')
        for link in self.trunk:
            print(link)
        print('----')

    def test(self, x, t, thresholds=None, batchsize=None):
        """Early-exit evaluation (by ``percentTestExits`` when no thresholds
        are given or set; see ``predict_percent``).

        Returns ``(accuracy, exit_accuracies, exit_counts, seconds)``: overall
        accuracy, accuracy of the samples each exit classified (0. where an
        exit took none, as the original: check ``exit_counts`` to tell it
        from an exit that got all its samples wrong), how many samples each
        exit took, and the end-to-end
        wall time of the whole evaluation. (``utils.test`` returns the same
        facts in another order, ``(accuracy, seconds, counts, exit_accuracies)``,
        as the original's two functions did; both orders are kept.)
        """
        validate_inputs(x, self.input_shape)
        validate_labels(t, len(x), self.num_classes(x))
        xp_sync = self.xp
        synchronize(xp_sync)
        start = time.perf_counter()
        if thresholds is None and self._thresholds is None:
            labels, exits = self.predict_percent(x, batchsize=batchsize)
        else:
            labels, exits = self.predict(x, thresholds, batchsize)
        seconds = time.perf_counter() - start
        t = chainer.backends.cuda.to_cpu(t)
        correct = labels == t
        counts = numpy.bincount(exits, minlength=self.numexits())
        exit_accs = [float(correct[exits == n].mean()) if counts[n] else 0.
                     for n in range(self.numexits())]
        return float(correct.mean()), exit_accs, counts.tolist(), seconds

    def test_main(self, x, t, batchsize=None):
        """Main-network evaluation: ``(accuracy, seconds)``."""
        validate_inputs(x, self.input_shape)
        validate_labels(t, len(x), self.num_classes(x))
        synchronize(self.xp)
        start = time.perf_counter()
        labels = self.predict_main(x, batchsize)
        seconds = time.perf_counter() - start
        return float((labels == chainer.backends.cuda.to_cpu(t)).mean()), seconds
