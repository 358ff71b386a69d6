"""Training recipes beyond the paper compared on B-LeNet / MNIST, over seeds.

Each run trains on all 60,000 training images with a reduced schedule
(default 2 main-only + 3 joint epochs, batch 512), as the driver does (main
phase with ``seed``, joint phase with ``seed + 1``), then evaluates on the
full 10,000-image test set: the accuracy of every exit, the knee (the
largest share leaving at exit 1 whose accuracy is at least the model's own
last exit's, over every distinct exit-1 entropy, so no threshold grid), the
share and accuracy at the paper's T = 0.025, where the errors are when 94 %
leave at exit 1 (``errors_at_share``), and, where numba is installed, the
batch-1 end-to-end gain of the numba path at the knee (fastest of
``--rounds`` interleaved rounds). Recipes with the same Adam beta1,
learning-rate schedule and shift share one main phase: its snapshot is
resumed, which ends exactly where an uninterrupted run would.

    python benchmarks/recipes.py run --seeds 0,1,2   # every recipe and seed, then the table
    python benchmarks/recipes.py train --recipe distill --seed 0   # one run
    python benchmarks/recipes.py table                            # the table
    python benchmarks/recipes.py reference FILE.npz [--recipe R]  # any weights
    python benchmarks/recipes.py rescore   # newer accuracy figures for every run

Runs go to ``results/recipes/runs/<recipe>_seed<S>.{json,npz}``; ``table``
writes ``results/recipes/table.md`` and ``table.json`` from every run there.
"""
import argparse
import glob
import json
import os
import sys
import time

from common import ROOT, best_latencies, load

import numpy

from branchynet.io import fileio
from branchynet.measures import confidence
from branchynet.training import loop as training

OUT = os.path.join(ROOT, 'results', 'recipes')
#: The recipes (``train_exits`` options); ``combo`` is the two single changes
#: together, fixed before any run.
RECIPES = {
    'original': {},
    'distill': {'distill_weight': 1.0, 'distill_temperature': 3.0},
    'beta1': {'adam_beta1': 0.99},
    'combo': {'distill_weight': 1.0, 'distill_temperature': 3.0, 'adam_beta1': 0.99},
    'weights': {'exit_weights': [1.0, 0.3]},
    'cosine': {'lr_schedule': 'cosine'},
    'cosine_weights': {'lr_schedule': 'cosine', 'exit_weights': [1.0, 0.3]},
    'shift': {'shift': 2},
    'shift_weights': {'shift': 2, 'exit_weights': [1.0, 0.3]},
}
#: The options that also change the main-only phase (the rest are joint-only).
MAIN_OPTIONS = ('adam_beta1', 'lr_schedule', 'shift', 'flip')
#: The paper's threshold for B-LeNet (Table I).
PAPER_T = 0.025
#: The share leaving at exit 1 that the project's target asks for (the paper: 94.3 %).
TARGET_SHARE = 0.94


def knee(entropy, correct_first, correct_last):
    """The fastest exit-1 threshold at least as accurate as the last exit alone.

    Every distinct entropy is a candidate (a sample leaves when its entropy is
    strictly below T), so the share is exact, not a grid's. Returns ``(T,
    share leaving at exit 1, accuracy)``.
    """
    order = numpy.argsort(entropy, kind='stable')
    ent = entropy[order]
    gained = numpy.concatenate([[0], numpy.cumsum(correct_first[order].astype(int) -
                                                  correct_last[order].astype(int))])
    baseline = int(correct_last.sum())
    # k samples may leave only where the k-th and (k+1)-th entropies differ
    k = numpy.arange(len(ent) + 1)
    possible = numpy.ones(len(ent) + 1, bool)
    possible[1:-1] = ent[1:] > ent[:-1]
    ok = numpy.flatnonzero(possible & (gained >= 0))
    best = int(k[ok].max())
    if best == 0:
        t = 0.0
    elif best == len(ent):
        t = float(ent[-1]) * 2 + 1e-12
    else:
        t = float((ent[best - 1] + ent[best]) / 2)
    return t, best / len(ent), (baseline + int(gained[best])) / len(ent)


def errors_at_share(entropy, correct_first, correct_last, share=TARGET_SHARE):
    """Where the errors are when the ``share`` of samples with the lowest exit-1
    entropy leave at exit 1: exit 1's errors on them, the last exit's errors on
    the same samples, and the last exit's errors on the rest."""
    order = numpy.argsort(entropy, kind='stable')
    k = int(round(share * len(order)))
    leave, rest = order[:k], order[k:]
    return {'share': share, 'exit1_errors': int((~correct_first[leave]).sum()),
            'last_errors_same_samples': int((~correct_last[leave]).sum()),
            'last_errors_rest': int((~correct_last[rest]).sum())}


def accuracy_figures(net, x, y):
    """The accuracy figures of one trained B-LeNet on ``(x, y)`` (no timing)."""
    logits = net.get_logits(x)
    preds = [z.argmax(axis=1) for z in logits]
    correct = [p == y for p in preds]
    ent = confidence.entropy_from_logits(logits[0])
    t, share, acc = knee(ent, correct[0], correct[-1])
    paper = ent < PAPER_T
    out = {'exit_acc': [float(c.mean()) for c in correct], 'knee_T': t,
           'knee_exit1_share': share, 'knee_acc': acc,
           'paper_T_exit1_share': float(paper.mean()),
           'paper_T_acc': float(numpy.where(paper, correct[0], correct[-1]).mean()),
           'errors_at_target_share': errors_at_share(ent, correct[0], correct[-1])}
    return out, t


def evaluate(net, x, y, rounds):
    """The figures of one trained B-LeNet on ``(x, y)``, with the numba gain at the knee."""
    out, t = accuracy_figures(net, x, y)
    try:
        from branchynet.engines.numba import NumbaBranchyNet
        engine = NumbaBranchyNet(net)
    except ImportError as e:
        out['numba'] = 'not available: {}'.format(e)
        return out
    ms = best_latencies(net, x, y, [('numba', engine)], {'main': None, 'knee': [t]}, rounds)
    out.update(numba_ms_main=ms['numba', 'main'], numba_ms_knee=ms['numba', 'knee'],
               numba_gain_knee=ms['numba', 'main'] / ms['numba', 'knee'],
               load_average=load())
    return out


def train(args):
    from datasets import mnist
    from networks import lenet_mnist
    options = RECIPES[args.recipe]
    x_train, y_train, x_test, y_test = mnist.get_data()
    numpy.random.seed(args.seed)
    net = lenet_mnist.get_network()
    work = os.path.join(args.out, '_work')
    os.makedirs(work, exist_ok=True)
    os.makedirs(os.path.join(args.out, 'runs'), exist_ok=True)
    beta1 = options.get('adam_beta1', training.ORIGINAL_ADAM_BETA1)
    main_options = {k: options[k] for k in MAIN_OPTIONS if k in options}
    main_tag = ''.join('_{}{}'.format(k, v) for k, v in sorted(main_options.items())
                       if k != 'adam_beta1')
    settings = {'network': 'lenet_mnist', 'epochs_main': args.epochs_main,
                'run_seed': args.seed}
    start = time.time()
    main_curves = training.train_exits(
        net, x_train, y_train, main=True, batchsize=args.batchsize,
        num_epoch=args.epochs_main, seed=args.seed, settings=settings, resume=True,
        snapshot=os.path.join(work, 'main_beta{}{}_seed{}.snapshot.npz'.format(
            beta1, main_tag, args.seed)),
        progress=False, **main_options)
    joint_curves = training.train_exits(
        net, x_train, y_train, batchsize=args.batchsize, num_epoch=args.epochs_joint,
        seed=args.seed + 1, progress=False, **options)
    seconds = time.time() - start
    tag = '{}_seed{}'.format(args.recipe, args.seed)
    fileio.save_npz(os.path.join(args.out, 'runs', tag + '.npz'), net)
    result = {'recipe': args.recipe, 'options': options, 'seed': args.seed,
              'epochs_main': args.epochs_main, 'epochs_joint': args.epochs_joint,
              'batchsize': args.batchsize, 'n_train': len(x_train), 'n_test': len(x_test),
              'train_seconds': seconds, 'main_acc_curve': [a[0] for a in main_curves[1]],
              'joint_acc_curve': joint_curves[1]}
    result.update(evaluate(net, x_test, y_test, args.rounds))
    with open(os.path.join(args.out, 'runs', tag + '.json'), 'w') as f:
        json.dump(result, f, indent=1)
    print(json.dumps({k: v for k, v in result.items() if 'curve' not in k}))


def rescore(args):
    """Adds the accuracy figures this version computes to every run's json and
    the references', from the saved weights (no retraining, no timing)."""
    from datasets import mnist
    from networks import lenet_mnist
    _, _, x_test, y_test = mnist.get_data()
    paths = sorted(glob.glob(os.path.join(args.out, 'runs', '*.json'))) + \
        sorted(glob.glob(os.path.join(args.out, 'reference*.json')))
    for path in paths:
        with open(path) as f:
            result = json.load(f)
        weights = os.path.join(ROOT, result['model']) if 'model' in result else \
            path[:-len('.json')] + '.npz'
        if not os.path.exists(weights):
            print('kept as it is (its weights are not here):', os.path.relpath(path, ROOT))
            continue
        net = fileio.load_npz(weights, lenet_mnist.get_network())
        figures, _ = accuracy_figures(net, x_test, y_test)
        for key in ('exit_acc', 'knee_exit1_share', 'knee_acc'):  # the same weights?
            if not numpy.allclose(result[key], figures[key], rtol=0, atol=1e-9):
                raise SystemExit('error: {}: {} is {} in the file but {} from its weights; '
                                 'not rescoring'.format(path, key, result[key], figures[key]))
        result.update(figures)
        with fileio.atomic_write(path, 'w') as f:
            json.dump(result, f, indent=1)
        print('rescored', os.path.relpath(path, ROOT))


def reference(args):
    """The same figures for weights trained elsewhere (the recorded full run)."""
    from datasets import mnist
    from networks import lenet_mnist
    _, _, x_test, y_test = mnist.get_data()
    net = fileio.load_npz(args.model, lenet_mnist.get_network())
    result = {'model': os.path.relpath(os.path.abspath(args.model), ROOT),
              'recipe': args.recipe}
    result.update(evaluate(net, x_test, y_test, args.rounds))
    name = 'reference.json' if args.recipe == 'original' else \
        'reference_{}.json'.format(args.recipe)
    path = os.path.join(args.out, name)
    with open(path, 'w') as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result))


COLUMNS = [('exit 1 acc. (%)', lambda r: 100 * r['exit_acc'][0]),
           ('final exit acc. (%)', lambda r: 100 * r['exit_acc'][-1]),
           ('knee: exit 1 (%)', lambda r: 100 * r['knee_exit1_share']),
           ('knee acc. (%)', lambda r: 100 * r['knee_acc']),
           ('T=0.025: exit 1 (%)', lambda r: 100 * r['paper_T_exit1_share']),
           ('T=0.025 acc. (%)', lambda r: 100 * r['paper_T_acc']),
           ('numba gain at knee', lambda r: r.get('numba_gain_knee', float('nan'))),
           ('94 % leave: exit-1 errors', lambda r: _at_target(r, 'exit1_errors')),
           ('last exit errors, same samples', lambda r: _at_target(r, 'last_errors_same_samples')),
           ('last exit errors, rest', lambda r: _at_target(r, 'last_errors_rest'))]


def _at_target(result, key):
    """One count of ``errors_at_share`` (None for runs scored before it existed)."""
    return result.get('errors_at_target_share', {}).get(key)


def _cell(values):
    values = [v for v in values if v is not None]
    if not values:
        return '-'
    if len(values) == 1:
        return '{:.2f}'.format(values[0])
    return '{:.2f} ± {:.2f} ({:.2f}-{:.2f})'.format(
        numpy.mean(values), numpy.std(values, ddof=1), min(values), max(values))


def table(args):
    runs = {}
    folder = os.path.join(args.out, 'runs')
    for name in sorted(os.listdir(folder)):
        if name.endswith('.json'):
            with open(os.path.join(folder, name)) as f:
                r = json.load(f)
            runs.setdefault(r['recipe'], []).append(r)
    schedules = {(r['epochs_main'], r['epochs_joint'], r['batchsize'], r['n_train'])
                 for rs in runs.values() for r in rs}
    lines = ['# Training recipes on B-LeNet / MNIST', '',
             'Schedule(s) (main epochs, joint epochs, batch, training images): {}. '
             'Full 10,000-image test set. Cells: mean ± sample standard deviation '
             '(min-max) over seeds. Knee: the largest share leaving at exit 1 whose '
             'accuracy is at least the model\'s own last exit\'s, over every distinct '
             'exit-1 entropy. Numba gain: batch-1 end to end, main network / B-LeNet at '
             'the knee, fastest of the rounds, on a shared CPU.'.format(
                 ', '.join(str(s) for s in sorted(schedules))), '',
             '| recipe | options | seeds | ' + ' | '.join(c for c, _ in COLUMNS) + ' |',
             '|---|---|---|' + '---|' * len(COLUMNS)]
    summary = {}
    for recipe in [r for r in RECIPES if r in runs] + sorted(set(runs) - set(RECIPES)):
        rs = sorted(runs[recipe], key=lambda r: r['seed'])
        cells = {c: [fn(r) for r in rs] for c, fn in COLUMNS}
        summary[recipe] = {'seeds': [r['seed'] for r in rs], 'options': rs[0]['options'],
                           'values': cells}
        lines.append('| {} | {} | {} | {} |'.format(
            recipe, json.dumps(rs[0]['options']) if rs[0]['options'] else '-',
            ','.join(str(r['seed']) for r in rs),
            ' | '.join(_cell(v) for v in cells.values())))
    for ref in sorted(glob.glob(os.path.join(args.out, 'reference*.json'))):
        with open(ref) as f:
            r = json.load(f)
        recipe = r.get('recipe', 'original')
        lines.append('| {}, paper schedule (50 + 100 epochs, recorded: {}) | {} | 0 | {} |'.format(
            recipe, r['model'], json.dumps(RECIPES[recipe]) if RECIPES.get(recipe) else '-',
            ' | '.join(_cell([fn(r)]) for _, fn in COLUMNS)))
        summary[os.path.splitext(os.path.basename(ref))[0]] = r
    text = '\n'.join(lines) + '\n'
    with open(os.path.join(args.out, 'table.md'), 'w') as f:
        f.write(text)
    with open(os.path.join(args.out, 'table.json'), 'w') as f:
        json.dump(summary, f, indent=1)
    print(text)


def run(args):
    """Every recipe and seed asked for, one child process each (its output in
    ``<out>/logs/<recipe>_seed<S>.log``), in seed order, then the table."""
    import subprocess
    os.makedirs(os.path.join(args.out, 'logs'), exist_ok=True)
    for seed in args.seeds.split(','):
        for recipe in args.recipes.split(','):
            log = os.path.join(args.out, 'logs', '{}_seed{}.log'.format(recipe, seed))
            print('{} {} seed {} (log {})'.format(time.strftime('%H:%M:%S'), recipe, seed, log),
                  flush=True)
            with open(log, 'w') as f:
                subprocess.run([sys.executable, os.path.abspath(__file__), '--out', args.out,
                                '--rounds', str(args.rounds), 'train', '--recipe', recipe,
                                '--seed', seed, '--epochs-main', str(args.epochs_main),
                                '--epochs-joint', str(args.epochs_joint)],
                               stdout=f, stderr=subprocess.STDOUT, check=True)
    table(args)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--out', default=OUT)
    p.add_argument('--rounds', type=int, default=3, help='timing rounds (best of)')
    sub = p.add_subparsers(dest='command', required=True)
    t = sub.add_parser('train', help='train and evaluate one recipe with one seed')
    t.add_argument('--recipe', required=True, choices=list(RECIPES))
    t.add_argument('--seed', type=int, required=True)
    t.add_argument('--epochs-main', type=int, default=2)
    t.add_argument('--epochs-joint', type=int, default=3)
    t.add_argument('--batchsize', type=int, default=512)
    a = sub.add_parser('run', help='train every recipe and seed asked for, then the table')
    a.add_argument('--recipes', default='original,distill,beta1,combo')
    a.add_argument('--seeds', default='0,1,2')
    a.add_argument('--epochs-main', type=int, default=2)
    a.add_argument('--epochs-joint', type=int, default=3)
    r = sub.add_parser('reference', help='evaluate given weights the same way')
    r.add_argument('model')
    r.add_argument('--recipe', default='original', choices=list(RECIPES),
                   help='the recipe the weights were trained with (names the file: '
                        'reference.json for original, else reference_<recipe>.json)')
    sub.add_parser('table', help='the table of every run in <out>/runs')
    sub.add_parser('rescore', help="add this version's accuracy figures to every run in "
                                   '<out>/runs from its weights')
    args = p.parse_args()
    {'train': train, 'run': run, 'reference': reference, 'table': table,
     'rescore': rescore}[args.command](args)


if __name__ == '__main__':
    sys.exit(main())
