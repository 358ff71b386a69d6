"""Every recorded folder under results/ carries a SHA256SUMS manifest that
matches its files (git-tracked ones: run weights are not committed)."""
import hashlib
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, 'results')


def _manifests():
    return sorted(os.path.relpath(os.path.join(d, 'SHA256SUMS'), ROOT)
                  for d, _, files in os.walk(RESULTS) if 'SHA256SUMS' in files)


def test_every_recorded_folder_has_a_manifest():
    have = {os.path.dirname(m) for m in _manifests()}
    for name in ('recipes', 'throughput'):
        assert os.path.join('results', name) in have
    for run in os.listdir(os.path.join(RESULTS, 'paper')):
        assert os.path.join('results', 'paper', run) in have


@pytest.mark.parametrize('manifest', _manifests())
def test_manifest_matches_the_files(manifest):
    folder = os.path.join(ROOT, os.path.dirname(manifest))
    with open(os.path.join(ROOT, manifest)) as f:
        listed = dict(reversed(line.rstrip('\n').split('  ', 1)) for line in f if line.strip())
    for name, digest in listed.items():
        with open(os.path.join(folder, name), 'rb') as f:
            assert hashlib.sha256(f.read()).hexdigest() == digest, name
    tracked = subprocess.run(['git', 'ls-files', '.'], cwd=folder, capture_output=True,
                             text=True).stdout.split()
    if tracked:  # in a git checkout: every tracked file of the folder is listed
        nested = {os.path.dirname(m) for m in _manifests()} - {os.path.dirname(manifest)}
        unlisted = [t for t in tracked if t not in listed and t not in ('SHA256SUMS',
                                                                      'PROVENANCE.md')
                    and not any(os.path.join(os.path.dirname(manifest), t).startswith(n + '/')
                                for n in nested)]
        assert unlisted == [], unlisted
