from setuptools import find_packages, setup

setup(
    name='branchynet',
    version='0.1.0',
    description='BranchyNet (ICPR 2016) on Chainer 7: early-exit networks, '
                'joint training and honest timing',
    packages=find_packages(include=['branchynet', 'branchynet.*', 'networks',
                                    'networks.*', 'datasets', 'datasets.*']),
    python_requires='>=3.9',
    # The pinned, tested set (requirements/base.txt). chainer 7.8.1 needs
    # setuptools < 74 at build time: install with --no-build-isolation.
    install_requires=[
        'chainer==7.8.1', 'numpy>=1.26', 'scipy', 'scikit-learn', 'scikit-image',
        'matplotlib', 'dill',
    ],
    extras_require={'test': ['pytest', 'hypothesis'], 'onnx': ['onnx', 'onnxruntime'],
                    'numba': ['numba']},
)
