"""Exits added to a network already trained, its trunk untouched.

``attach_exits(network, points, x, y)`` reads a trained network without
early exits (``placement.trunk.Trunk.of``), makes a head at every boundary
of ``points`` (``placement.heads``), trains only the heads on the frozen
trunk's activations, and returns an ordinary ``BranchyNet`` with ``Branch``
markers at those points: ``calibrate``, ``predict``, the inference engines
and ``deploy`` take it as any other. Its trunk and final classifier are
copies of the network's, so its last exit gives the network's outputs bit
for bit. ``finetune_epochs`` > 0 then trains every exit and the trunk
jointly (``training.loop.train_exits``), which does change the trunk.
"""
import branchynet.placement.heads as heads_mod
from branchynet.placement.trunk import Trunk
from branchynet.training import loop
from branchynet.validation import InvalidValue, validate_inputs


def make_heads(trunk, points, kind='auto', budget=heads_mod.HEAD_BUDGET):
    """``(kinds, head link lists, head MACs)`` for ``points``: ``kind`` is a
    family name (``heads.KINDS``), or a function ``(shape, classes) -> list
    of links``."""
    heads_mod.check_kind(kind)
    d = trunk.describe()
    kinds, links, macs = [], [], []
    for p in points:
        shape, saved = d['shapes'][p], d['main_macs'] - d['macs'][p]
        if callable(kind):
            made = list(kind(shape, d['classes']))
            name, m = getattr(kind, '__name__', 'custom'), heads_mod.head_macs(made, shape)
        else:
            name, made, m = heads_mod.make_head(shape, d['classes'], saved, budget, kind)
        kinds.append(name)
        links.append(made)
        macs.append(m)
    return kinds, links, macs


def attach_exits(network, points, x, y, heads='auto', head_budget=heads_mod.HEAD_BUDGET,
                 input_shape=None, final_layers=1, drop_early_exits=False, epochs=3,
                 batchsize=128, alpha=1e-3, seed=0, cache_bytes=heads_mod.CACHE_BYTES,
                 finetune_epochs=0, progress=None, **net_kwargs):
    """A ``BranchyNet``: ``network``'s trunk and final classifier (copied)
    with exits at ``points`` whose heads alone were trained on ``x``, ``y``.

    Args:
        network: a trained BranchyNet with only its final exit, or a
            ``chainer.Sequential``/``ChainList``/list of layers whose last
            ``final_layers`` layers are the classifier (with ``input_shape``).
        points: layer boundaries (boundary b: after trunk layer b, counted
            from 1), one exit each.
        heads: ``'auto'`` (sized by ``head_budget``, see ``placement.heads``),
            a kind of ``heads.KINDS``, a function ``(shape, classes) -> list
            of links``, or a list of link lists, one per point.
        epochs, batchsize, alpha, seed: the heads' training (Adam).
        cache_bytes: activations kept in memory up to this size, else
            streamed (recomputed every epoch).
        finetune_epochs: joint epochs afterwards (trunk included).
        net_kwargs: for ``BranchyNet`` (e.g. ``confidence``).

    The training curves are in ``net.placement_history``.
    """
    trunk = Trunk.of(network, input_shape, final_layers, drop_early_exits)
    validate_inputs(x, trunk.input_shape)
    pts = trunk.check_points(points)
    for name, value in (('epochs', epochs), ('finetune_epochs', finetune_epochs)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidValue('{} must be a whole number >= 0, got {!r}'.format(name, value))
    if isinstance(heads, (list, tuple)):
        if len(heads) != len(pts) or not all(isinstance(h, (list, tuple)) for h in heads):
            raise InvalidValue('heads given as a list must hold one list of links per point '
                               '({} points), got {} entries'.format(len(pts), len(heads)))
        links, kinds = [list(h) for h in heads], ['given'] * len(pts)
    else:
        kinds, links, _ = make_heads(trunk, pts, heads, head_budget)
    history = heads_mod.train_heads(trunk, pts, links, x, y, epochs=epochs,
                                    batchsize=batchsize, alpha=alpha, seed=seed,
                                    cache_bytes=cache_bytes, progress=progress)
    net = trunk.build(pts, links, **net_kwargs)
    if finetune_epochs:
        loop.train_exits(net, x, y, main=False, batchsize=batchsize, num_epoch=finetune_epochs,
                         seed=seed, progress=progress if progress is not None else True)
    net.placement_history = dict(history, points=pts, kinds=kinds)
    return net
