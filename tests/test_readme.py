"""The README's quick start runs as written: its Python block, then its shell
line running the bundle's predict.py, whose answers are the model's."""
import os
import re
import shlex
import subprocess
import sys

import numpy
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECTION = '## Quick start'


def quick_start_blocks():
    """``(python, shell)``: the fenced blocks of the README's quick start."""
    with open(os.path.join(ROOT, 'README.md'), encoding='utf-8') as f:
        text = f.read()
    start = text.index(SECTION)
    end = text.find('\n## ', start + len(SECTION))
    section = text[start:end if end >= 0 else len(text)]
    blocks = dict(re.findall(r'^```(python|sh)\n(.*?)^```', section, re.M | re.S))
    return blocks['python'], blocks['sh']


@pytest.mark.slow
@pytest.mark.network
def test_quick_start_runs_and_its_bundle_answers_as_the_model(tmp_path, monkeypatch):
    python, shell = quick_start_blocks()
    monkeypatch.chdir(tmp_path)  # it writes my_bundle/ and x.npy where it runs
    namespace = {'__name__': '__quick_start__'}
    exec(compile(python, 'README.md quick start', 'exec'), namespace)
    net, x_test = namespace['net'], namespace['x_test']
    result = namespace['result']
    assert len(result['thresholds']) == net.numexits() - 1
    assert list(net.thresholdExits) == list(result['thresholds'])
    assert os.path.isfile(tmp_path / 'my_bundle' / 'predict.py')
    # the shell line, with this interpreter as `python`
    commands = [line.split('#')[0].strip() for line in shell.splitlines()]
    commands = [shlex.split(c) for c in commands if c]
    assert len(commands) == 1 and commands[0][0] == 'python', shell
    run = subprocess.run([sys.executable] + commands[0][1:], cwd=str(tmp_path),
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    out_file = tmp_path / commands[0][-1]
    with numpy.load(str(out_file)) as out:
        labels, exits = out['labels'], out['exits']
    x = numpy.load(str(tmp_path / commands[0][-2]))
    numpy.testing.assert_array_equal(x, x_test[:len(x)])
    want_labels, want_exits = net.predict(x)
    numpy.testing.assert_array_equal(exits, want_exits)
    numpy.testing.assert_array_equal(labels, want_labels)
