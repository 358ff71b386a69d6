"""``--place-exits K``: automatic exit placement on the main network, after
its main-only training (``branchynet.placement.place_exits``).

The network's own early exits are left out; the placement chooses at most K
exits on its trunk, on the fastest timed path (numba where it is among
``--engines``, else fast, else ONNX Runtime, else Chainer) at batch size 1,
for the main network's held-out accuracy. Held out: the ``--n-val`` split;
without one, the first half of the test samples (then measured on the other
half). The hand placement (the network's own branch points, with heads of
the placement's family) is reported beside it. Writes
``_results/<network>_placement.{md,json}`` and ``_figs/<network>_placement.png``;
the run then goes on as without the option.
"""
import os

from branchynet.driver.stages import log
from branchynet.placement import place_exits

#: the engine the placement times on: the first of these the run times
PREFERENCE = ('numba', 'fast', 'onnx', 'chainer')


def placement_engine(engines):
    """The engine to time on among the ``--engines`` (None: all)."""
    for name in PREFERENCE:
        if engines is None or name in engines:
            return name
    return 'chainer'


def place_after_main(net, network, k, x_train, y_train, x_val, y_val, x_test, y_test, out,
                     engines=None, seed=0, n_timing=None):
    """Run the placement on ``net``'s trunk and final exit; returns the
    report's summary for the run's results. numpy's global generator (which
    Chainer's initialisers and dropout draw from) is left as it was, so the
    run goes on as it would without the placement."""
    import numpy
    state = numpy.random.get_state()
    try:
        return _place(net, network, k, x_train, y_train, x_val, y_val, x_test, y_test, out,
                      engines, seed, n_timing)
    finally:
        numpy.random.set_state(state)


def _place(net, network, k, x_train, y_train, x_val, y_val, x_test, y_test, out, engines,
           seed, n_timing):
    if x_val is None:  # every training image trained on: half the test set is held out
        half = len(x_test) // 2
        x_val, y_val, x_test, y_test = x_test[:half], y_test[:half], x_test[half:], y_test[half:]
    if n_timing:
        x_test, y_test = x_test[:n_timing], y_test[:n_timing]
    engine = placement_engine(engines)
    hand = [int(b) for b in net.branch_points[:-1]]
    log('placing at most {} exits on the trained main network ({} engine, batch size 1; hand '
        'placement at boundaries {})'.format(k, engine, hand))
    _, report = place_exits(net, x_train, y_train, x_val, y_val, k=k, engine=engine,
                            x_test=x_test, y_test=y_test, compare={'hand': hand} if hand else {},
                            drop_early_exits=True, seed=seed, log=log)
    report.save(out['results'], network + '_placement')
    report.figure(os.path.join(out['figs'], network + '_placement'))
    log('placement: {} (results/{}_placement.md)'.format(report['chosen']['points'], network))
    return {'chosen': report['chosen'], 'hand': report['baselines'].get('hand'),
            'sdn': report['baselines']['fixed fractions (SDN)']}
