"""Thin setup script beside pyproject.toml (which holds the metadata).

It says only which packages install: ``branchynet`` and its subpackages, with
the top-level folders ``datasets/`` and ``networks/`` installed as
``branchynet.datasets`` and ``branchynet.networks`` (no top-level package of
either name lands in site-packages; a checkout keeps importing them as
``datasets`` and ``networks``, see branchynet/bundled.py)."""
from setuptools import find_packages, setup

BUNDLED = {'branchynet.datasets': 'datasets', 'branchynet.networks': 'networks'}

setup(packages=find_packages(include=['branchynet', 'branchynet.*']) + sorted(BUNDLED),
      package_dir=BUNDLED)
