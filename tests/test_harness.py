"""get_results.sh's interface and the Docker files."""
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_get_results_help_lists_every_option():
    out = subprocess.run(['bash', 'get_results.sh', '--help'], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    for option in ('--paper', '--preset', '--networks', '--device', '--seed', '--dataset',
                   '--resume', '--mpi', '--hostfile'):
        assert option in out


def test_get_results_rejects_unknown_options_and_devices():
    bad = subprocess.run(['bash', 'get_results.sh', '--fast-please'], cwd=ROOT,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown option '--fast-please'" in bad.stderr
    bad = subprocess.run(['bash', 'get_results.sh', '--device', 'tpu'], cwd=ROOT,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and 'cpu, gpu or auto' in bad.stderr


@pytest.mark.parametrize('dockerfile', ['Dockerfile', 'Dockerfile.cuda'])
def test_dockerfiles_pass_hadolint(dockerfile):
    hadolint = shutil.which('hadolint') or os.path.join(os.path.dirname(sys.executable),
                                                        'hadolint')
    result = subprocess.run([hadolint, '--config', 'docker/.hadolint.yaml',
                             'docker/' + dockerfile], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_images_install_what_the_readme_installs():
    for dockerfile in ('Dockerfile', 'Dockerfile.cuda'):
        with open(os.path.join(ROOT, 'docker', dockerfile)) as f:
            assert 'tools/ensure_env.sh test' in f.read()
    with open(os.path.join(ROOT, 'run_tests.sh')) as f:
        assert 'tools/ensure_env.sh test' in f.read()
