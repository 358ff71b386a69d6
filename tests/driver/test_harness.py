"""The driver's command line and the Docker files."""
import os
import shutil
import subprocess
import sys

import pytest

from tests.helpers import ROOT  # noqa: E402


def test_the_driver_refuses_unknown_options_and_devices(tmp_path):
    driver = [sys.executable, '-m', 'branchynet.experiment', '--out', str(tmp_path)]
    bad = subprocess.run(driver + ['--fast-please'], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and 'unrecognized arguments: --fast-please' in bad.stderr
    bad = subprocess.run(driver + ['--device', 'tpu'], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown device 'tpu'" in bad.stderr


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
