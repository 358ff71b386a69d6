"""Data-parallel training and evaluation over MPI ranks, with ChainerMN.

    mpiexec -n 2 python -m branchynet.experiment --distributed --network lenet_mnist

Every rank holds the whole model and the whole data set. Training:

- parameters (and BatchNorm statistics) are broadcast from rank 0 before the
  first step, so every rank starts from rank 0's weights;
- every rank draws the same shuffled order from the same seed, as a single
  process would, and takes its own contiguous part of each global batch
  (``numpy.array_split``: sizes differ by at most one), so one epoch covers
  every sample exactly once and the per-rank batch is the global batch / N;
- gradients are averaged across ranks by ``chainermn.create_multi_node_optimizer``
  around the optimizer that ``BranchyNet.train``/``train_main`` step. A rank's
  gradient is first scaled by ``N * n_rank / n_batch`` so that unequal parts
  (a last, short batch) still average to the gradient of the global batch's
  mean loss; with equal parts the factor is 1 and nothing is multiplied. A
  rank whose part would be empty trains on one duplicated sample with weight 0;
- per-epoch loss and accuracy are summed over ranks (the same curves as one
  process), BatchNorm running statistics are averaged over ranks at every
  epoch end, and only rank 0 prints progress and writes snapshots.

The CPU training kernels of each rank split its part of a batch over its
share of the cores it may use (``kernelthreads.share_cores``): those cores
over the ranks on the same machine that may use any of them (all ranks
where the launcher binds none), so N ranks on N cores run N kernel
threads rather than N x N. ``$BRANCHYNET_TRAIN_THREADS`` overrides it;
BLAS threads (the GEMM path's convolutions, Linear) are left as they are.

Hence k steps on N ranks with global batch B give the weights of k steps of
one process with batch B, up to floating-point summation order (networks
without BatchNorm or dropout; with BatchNorm, batch statistics are taken
over each rank's part, as in any data-parallel run).

Evaluation (``get_SM``, ``get_logits``, ``predict_main``, ``exit_outputs``)
splits the samples into one contiguous shard per rank and gathers the
results in order on every rank. Batch-1 timing stays a single-process
measurement on rank 0 while the others wait (``wait_for_root``) without
spinning.

Errors: inside ``Distributed.agreed`` (the driver's checks, data loading,
reading a snapshot to resume) an input error on any rank makes every rank
raise, so the job ends normally with one message; any other exception of a
rank ends the whole job through ``MPI_Abort`` (``abort_on_error``) instead of
leaving the others blocked in a collective.
"""
import contextlib
import fcntl
import os
import stat
import struct
import sys
import termios
import time
import traceback

import chainer
import numpy

from branchynet.links import kernelthreads
from branchynet.validation import InputError, InvalidValue


def available():
    """Whether mpi4py (and so ChainerMN) can be imported."""
    try:
        import mpi4py.MPI  # noqa: F401
    except ImportError:
        return False
    return True


def world_rank():
    """This process's rank in MPI_COMM_WORLD (0 without MPI)."""
    if not available():
        return 0
    from mpi4py import MPI
    return MPI.COMM_WORLD.Get_rank()


class MPIUnavailable(RuntimeError):
    """mpi4py or the MPI library it needs cannot be loaded."""


def _require_mpi():
    if not available():
        raise MPIUnavailable(
            'distributed mode needs mpi4py and an MPI library: pip install -r '
            'requirements/mpi.txt (mpi4py and the mpich wheel), then start with '
            'mpiexec -n N python -m branchynet.experiment --distributed ...')


#: Communicators for CPU ranks: ChainerMN's 'naive' (one all-reduce per
#: parameter) and 'packed' (its subclass with one all-reduce per step).
CPU_COMMUNICATORS = ('packed', 'naive')


def split_indices(indices, size):
    """``size`` contiguous parts of ``indices`` whose lengths differ by at most one."""
    if size < 1:
        raise ValueError('size must be >= 1, got {}'.format(size))
    return numpy.array_split(numpy.asarray(indices), size)


def shard_bounds(n, rank, size):
    """``(start, stop)`` of rank ``rank``'s contiguous shard of ``n`` samples."""
    if not 0 <= rank < size:
        raise ValueError('rank must be in [0, {}), got {}'.format(size, rank))
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


def _packed_communicator_class():
    from chainermn.communicators.naive_communicator import NaiveCommunicator
    from mpi4py import MPI

    class PackedCommunicator(NaiveCommunicator):
        """ChainerMN's CPU ('naive') communicator, all-reducing every gradient
        in one message per step instead of one per parameter (B-ResNet-110
        has 456), and yielding the CPU while it waits for the other ranks
        instead of polling (MPICH polls: on a machine with more processes
        than cores, a polling rank takes the core its partner needs)."""

        def multi_node_mean_grad(self, model, zero_fill=False):
            params = [p for _, p in sorted(model.namedparams())
                      if p.grad is not None or (zero_fill and p.data is not None)]
            for p in params:
                if p.grad is None:
                    p.grad = p.xp.zeros_like(p.data)
            if not params:
                return
            if any(p.xp is not numpy or p.grad.dtype != numpy.float32 for p in params):
                return super().multi_node_mean_grad(model, zero_fill)
            buffer = numpy.concatenate([p.grad.ravel() for p in params])
            request = self.mpi_comm.Iallreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)
            while not request.Test():
                os.sched_yield()
            buffer *= 1.0 / self.size  # as ChainerMN's own mean
            offset = 0
            for p in params:
                p.grad[...] = buffer[offset:offset + p.grad.size].reshape(p.grad.shape)
                offset += p.grad.size

    return PackedCommunicator


class _TimedCommunicator:
    """A communicator whose gradient all-reduce is timed (``seconds``)."""

    def __init__(self, comm):
        self.__dict__.update(comm=comm, seconds=0.0)

    def multi_node_mean_grad(self, model, zero_fill=False):
        start = time.perf_counter()
        self.comm.multi_node_mean_grad(model, zero_fill)
        self.__dict__['seconds'] += time.perf_counter() - start

    def __getattr__(self, name):
        return getattr(self.__dict__['comm'], name)


class _ScaledMultiNodeOptimizer:
    """ChainerMN's multi-node optimizer, with a per-step gradient scale.

    ``scale`` (set by ``Distributed.local_part``) multiplies this rank's
    gradients before ChainerMN averages them over ranks and steps the
    wrapped optimizer. Pickles as the wrapped single-process optimizer (a
    communicator cannot be pickled), so a model saved with dill after
    distributed training loads anywhere. ``comm_seconds``: time spent in
    the gradient all-reduce so far.
    """

    def __init__(self, actual, comm):
        import chainermn
        timed = _TimedCommunicator(comm)
        inner = chainermn.create_multi_node_optimizer(actual, timed)
        # ChainerMN treats its first update as a broadcast of the parameters
        # (no step) because it sees the parameter set for the first time;
        # recording the set now makes the first update a real step (the
        # parameters were broadcast by Distributed.setup already).
        inner.is_changed(actual.target)
        self.__dict__.update(actual=actual, inner=inner, timed=timed, scale=1.0)

    @property
    def comm_seconds(self):
        return self.timed.seconds

    def update(self, lossfun=None, *args, **kwargs):
        if lossfun is not None:
            raise TypeError('the distributed optimizer is stepped after backward(); '
                            'call update() without a loss function')
        if self.scale != 1.0:
            for param in self.actual.target.params():
                if param.grad is not None:
                    param.grad *= param.grad.dtype.type(self.scale)
        self.inner.update()

    def __getattr__(self, name):
        return getattr(self.__dict__['actual'], name)

    def __setattr__(self, name, value):
        if name == 'scale':
            self.__dict__[name] = value
        else:
            setattr(self.actual, name, value)

    def __reduce__(self):
        return (_identity, (self.actual,))


def _identity(obj):
    return obj


def _ranks_sharing_cores(mpi_comm):
    """How many ranks on this rank's machine, itself included, may run on
    any of its cores: all of them where the launcher binds no rank, 1 where
    it binds each to cores of its own, the ranks bound with it otherwise."""
    from mpi4py import MPI
    node = mpi_comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        mine = kernelthreads.affinity()
        return sum(1 for cores in node.allgather(mine) if cores & mine)
    finally:
        node.Free()


class Distributed:
    """One MPI job's view for training and evaluation (see the module docs).

    Args:
        comm: a ChainerMN communicator (``create`` makes one).
    """

    def __init__(self, comm):
        self.comm = comm
        self.rank, self.size = comm.rank, comm.size
        self.is_root = self.rank == 0
        self._optimizer = None
        #: every rank's CPU training kernel threads (set by ``create`` on CPU)
        self.kernel_threads = None

    @classmethod
    def create(cls, communicator=None, gpu=False):
        """A ChainerMN communicator over MPI_COMM_WORLD.

        ``communicator``: on GPUs any of ChainerMN's (default ``pure_nccl``);
        on CPU ``packed`` (the default: ``naive`` with one message per step,
        see ``PackedCommunicator``) or ChainerMN's ``naive``.
        """
        _require_mpi()
        import chainermn
        name = communicator or ('pure_nccl' if gpu else 'packed')
        if not gpu and name not in CPU_COMMUNICATORS:
            raise InvalidValue('on CPU the communicator must be one of {}, got {!r}'.format(
                ', '.join(CPU_COMMUNICATORS), name))
        if name == 'packed':
            from mpi4py import MPI
            comm = _packed_communicator_class()(MPI.COMM_WORLD)
        else:
            try:
                comm = chainermn.create_communicator(name)
            except ValueError as e:  # ChainerMN's message for an unknown name
                raise InvalidValue('--communicator {!r}: {}'.format(name, e)) from e
        dist = cls(comm)
        if not gpu:  # the ranks using the same cores share them
            kernelthreads.share_cores(_ranks_sharing_cores(comm.mpi_comm))
            dist.kernel_threads = comm.mpi_comm.allgather(kernelthreads.threads())
        return dist

    @property
    def communicator_name(self):
        return type(self.comm).__name__

    # ------------------------------------------------------------- training
    def setup(self, net):
        """Broadcast rank 0's weights and statistics; wrap ``net``'s optimizer."""
        optimizer = net.ensure_optimizer()
        if not isinstance(optimizer, _ScaledMultiNodeOptimizer):
            optimizer = _ScaledMultiNodeOptimizer(optimizer, self.comm)
            net.optimizer = optimizer
        self._optimizer = optimizer
        self.comm.bcast_data(net)
        persistents = self.comm.bcast_obj(
            {k: chainer.backends.cuda.to_cpu(v) for k, v in _persistents(net).items()}
            if self.is_root else None)
        _set_persistents(net, persistents)
        return optimizer

    @property
    def comm_seconds(self):
        """Seconds this rank spent in gradient all-reduces so far."""
        return self._optimizer.comm_seconds if self._optimizer is not None else 0.0

    def local_part(self, batch):
        """This rank's part of a global batch of indices, and its weight.

        Returns ``(indices, count)``: ``count`` samples of the batch are this
        rank's; when that is 0, ``indices`` holds one duplicated sample
        whose gradient is scaled to zero. Sets the gradient scale.
        """
        batch = numpy.asarray(batch)
        if len(batch) == 0:
            raise ValueError('empty global batch')
        part = split_indices(batch, self.size)[self.rank]
        count = len(part)
        if count == 0:
            part = batch[:1]
        if self._optimizer is not None:
            self._optimizer.scale = count * self.size / len(batch)
        return part, count

    def epoch_start(self, epoch, seed):
        """Reseed numpy's global generator (dropout) on ranks > 0, per epoch.

        Rank 0 keeps the stream a single process would use (saved in its
        snapshots); the others draw from ``(seed, rank, epoch)``, so their
        dropout masks differ from rank 0's and resuming at an epoch boundary
        reproduces them.
        """
        if not self.is_root:
            numpy.random.seed([0 if seed is None else int(seed), self.rank, epoch])

    def reduce_sums(self, *values):
        """Element-wise sums over ranks of numbers or arrays (on every rank)."""
        totals = self._sum([numpy.asarray(v, dtype=numpy.float64) for v in values])
        return [t if t.ndim else float(t) for t in totals]

    def _sum(self, arrays):
        """Element-wise sums over ranks of a list of float64 arrays, added in rank
        order (the same result on every rank)."""
        parts = self.comm.mpi_comm.allgather(arrays)
        return [sum(p[k] for p in parts[1:]) + parts[0][k] if len(parts) > 1 else parts[0][k]
                for k in range(len(arrays))]

    def any_rank(self, flag):
        """Whether ``flag`` is true on any rank (every rank gets the answer)."""
        return any(self.comm.mpi_comm.allgather(bool(flag)))

    def epoch_end(self, net):
        """Average float persistent values (BatchNorm running statistics) over ranks."""
        names = [name for name, value in sorted(_persistents(net).items())
                 if numpy.asarray(value).dtype.kind == 'f']
        if not names:
            return
        local = _persistents(net)
        total = self._sum([numpy.asarray(chainer.backends.cuda.to_cpu(local[n]),
                                         dtype=numpy.float64) for n in names])
        _set_persistents(net, {n: t / self.size for n, t in zip(names, total)})

    def load_snapshot(self, path, net, rng, **checks):
        """Every rank restores rank 0's snapshot (sent over MPI, so no shared disk
        is needed); returns ``checkpoint.load``'s ``Position``, or None when rank 0
        has none. ``checks`` go to ``checkpoint.load``; a snapshot it refuses is
        refused on every rank. The running sums of an interrupted epoch, the
        sums over all ranks, stay on rank 0 (the others start that epoch at 0).
        """
        from branchynet.training import checkpoint
        with self.agreed((InputError, OSError)):
            data = None
            if self.is_root and checkpoint.exists(path):
                with open(path, 'rb') as f:
                    data = f.read()
        # every rank learns from rank 0 whether there is a snapshot (ChainerMN's
        # bcast_obj asserts on a None from the root), then all load it or none
        if not self.comm.mpi_comm.bcast(data is not None, root=0):
            return None
        data = self.comm.bcast_obj(data)
        with self.agreed((InputError,)):
            at = checkpoint.load(path, net, rng, data=data, **checks)
        if not self.is_root:
            at['sums'] = None
        return at

    @contextlib.contextmanager
    def agreed(self, kinds=(InputError,)):
        """Every rank leaves the block the same way: when the body raised on any
        rank, every rank raises, so none is left waiting in a collective.

        A rank whose body raised re-raises its own exception; the others raise
        one of the first failing rank's kind (the first of ``kinds`` it is an
        instance of) with that rank's message. These exceptions have
        ``all_ranks = True``: the job can end normally instead of by
        ``MPI_Abort``. When a rank's exception is of none of ``kinds`` (a
        bug), that rank re-raises it and the others raise a ``RuntimeError``
        naming it, none marked, so ``abort_on_error`` ends the job.
        """
        error = None
        try:
            yield
        except Exception as e:  # noqa: BLE001 (reported to every rank below)
            error = e
        kind = None if error is None else next(
            (k for k, cls in enumerate(kinds) if isinstance(error, cls)), -1)
        reports = self.comm.mpi_comm.allgather(
            None if error is None else (kind, str(error)))
        failed = [(rank, r) for rank, r in enumerate(reports) if r is not None]
        if not failed:
            return
        agreed = all(r[0] >= 0 for _, r in failed)
        if error is not None:
            if agreed:
                error.all_ranks = True
            raise error
        rank, (kind, message) = failed[0]
        if kind < 0:
            raise RuntimeError('rank {} failed: {}'.format(rank, message))
        other = kinds[kind]('rank {}: {}'.format(rank, message))
        other.all_ranks = agreed
        raise other

    # ----------------------------------------------------------- evaluation
    def shard(self, n):
        """This rank's ``slice`` of ``n`` samples (contiguous, ordered by rank)."""
        return slice(*shard_bounds(n, self.rank, self.size))

    def gather_exits(self, fn, x):
        """``fn`` (samples -> list of arrays, one per exit) over sharded ``x``,
        concatenated in sample order on every rank."""
        mine = fn(x[self.shard(len(x))])
        parts = self.comm.mpi_comm.allgather(mine)
        return [numpy.concatenate([p[k] for p in parts]) for k in range(len(mine))]

    def get_SM(self, net, x, batchsize=1024):
        return self.gather_exits(lambda xs: net.get_SM(xs, batchsize), x)

    def get_logits(self, net, x, batchsize=1024):
        return self.gather_exits(lambda xs: net.get_logits(xs, batchsize), x)

    def predict_main(self, net, x, batchsize=1000):
        return self.gather_exits(lambda xs: [net.predict_main(xs, batchsize)], x)[0]

    def exit_outputs(self, net, x, measure=None, batchsize=256):
        """``screening.exit_outputs`` computed on each rank's shard and gathered."""
        from branchynet.evaluation import screening
        return tuple(self.gather_exits(
            lambda xs: list(screening.exit_outputs(net, xs, measure, batchsize)), x))

    # ------------------------------------------------------ control of ranks
    def wait_for_root(self, poll=0.05):
        """A barrier that sleeps while it waits (MPICH's blocking barrier polls
        and would take a CPU core from rank 0's timing runs)."""
        request = self.comm.mpi_comm.Ibarrier()
        while not request.Test():
            time.sleep(poll)

    def silence_others(self):
        """Send stdout of ranks > 0 to /dev/null (stderr, for errors, stays)."""
        if not self.is_root:
            sys.stdout = open(os.devnull, 'w')

    def abort(self, message, code=1):
        """Print ``message`` and end every rank of the job (MPI_Abort)."""
        sys.stderr.write('rank {}/{}: {}\n'.format(self.rank, self.size, message))
        sys.stderr.flush()
        wait_until_read(sys.stderr)
        self.comm.mpi_comm.Abort(code)


def unread_bytes(stream):
    """Bytes written to ``stream`` that its reader has not taken yet, when
    ``stream`` is a pipe; None for a file, terminal or socket."""
    try:
        fd = stream.fileno()
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return None
        return struct.unpack('i', fcntl.ioctl(fd, termios.FIONREAD, b'\0' * 4))[0]
    except (AttributeError, OSError, ValueError):
        return None


def wait_until_read(stream, timeout=2.0, poll=0.005):
    """Wait, at most ``timeout`` seconds, until the reader of ``stream``'s
    pipe has taken everything written to it (no wait when ``stream`` is no
    pipe). Return False only when the time ran out with bytes still unread.

    MPICH's launcher kills every rank when one calls ``MPI_Abort``; one
    aborted test job ended with exit status 1 and nothing on stderr, not even
    MPICH's own abort line, which is what losing the lines still in the
    aborting rank's stderr pipe would give.
    """
    deadline = time.monotonic() + timeout
    while True:
        left = unread_bytes(stream)
        if not left:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll)


@contextlib.contextmanager
def abort_on_error(dist, keep=()):
    """End the whole MPI job, with the error, if this rank raises.

    Without it a failing rank leaves the others waiting forever in their
    next collective operation. Exceptions of the types in ``keep`` (raised
    by every rank together, e.g. an agreed interruption) and those marked
    ``all_ranks`` (``Distributed.agreed``) pass through.
    """
    try:
        yield
    except BaseException as e:
        if isinstance(e, keep) or getattr(e, 'all_ranks', False) or \
                (isinstance(e, SystemExit) and not e.code):
            raise
        dist.abort('failed, aborting all {} ranks: {}: {}\n{}'.format(
            dist.size, type(e).__name__, e, traceback.format_exc()))


def _persistents(net):
    return {name: value for name, value in _named_persistents(net)}


def _named_persistents(link):
    for child_path, child in link.namedlinks():
        for name in sorted(child._persistent):
            yield child_path + '/' + name, getattr(child, name)


def _set_persistents(net, values):
    links = dict(net.namedlinks())
    for path, value in values.items():
        link_path, name = path.rsplit('/', 1)
        link = links[link_path]
        current = getattr(link, name)
        if isinstance(current, (numpy.ndarray,)) or hasattr(current, 'device'):
            xp = chainer.backend.get_array_module(current)
            current[...] = xp.asarray(value, dtype=current.dtype)
        else:
            setattr(link, name, type(current)(value) if current is not None else value)
