"""What a run records about itself: the environment, the source commit, and
results files in standard JSON."""
import json
import os
import platform
import subprocess
import time

import chainer
import numpy

from branchynet.io.fileio import atomic_write


def source_commit():
    """The git commit the code ran from (``+dirty`` with uncommitted changes), or None."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        commit = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=root, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'],
                               cwd=root, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ('+dirty' if dirty.strip() else '')


def start():
    """What a run records at its start: ``{'commit', 'started'}`` (the commit
    the code ran from then; a checkout changed while the run goes on does not
    change it). Give it to ``environment``."""
    return {'commit': source_commit(), 'started': time.strftime('%Y-%m-%d %H:%M:%S %Z')}


def environment(config, device, started=None):
    """What the numbers were measured on, recorded with the results.

    ``started`` (``start()``'s record, taken when the run began) gives the
    commit and start time; the commit when the results are written is added
    as ``commit_at_end`` where it differs. Without it, the commit now."""
    cpu = platform.processor()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next(line.split(':', 1)[1].strip() for line in f
                       if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    env = {'python': platform.python_version(), 'chainer': chainer.__version__,
           'numpy': numpy.__version__, 'cpu': cpu, 'cores': os.cpu_count(),
           'platform': platform.platform(), 'training_device': str(device),
           'commit': source_commit(), 'recorded': time.strftime('%Y-%m-%d %H:%M:%S %Z')}
    if started is not None:
        if started['commit'] != env['commit']:
            env['commit_at_end'] = env['commit']
        env.update(commit=started['commit'], started=started['started'])
    if device.xp is not numpy:
        import cupy
        env['cupy'] = cupy.__version__
        env['gpu'] = cupy.cuda.runtime.getDeviceProperties(0)['name'].decode()
    return env


def json_safe(obj):
    """``obj`` with numpy values as Python ones and NaN/inf as None (null), so
    the file is standard JSON (``json.dump`` would write NaN and Infinity)."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, numpy.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, numpy.generic):
        obj = obj.item()
    if isinstance(obj, float) and not numpy.isfinite(obj):
        return None
    return obj


def write_json(path, obj):
    """``obj`` as standard JSON (``json_safe``), written atomically."""
    with atomic_write(path, 'w') as f:
        json.dump(json_safe(obj), f, indent=1, allow_nan=False, default=float)
