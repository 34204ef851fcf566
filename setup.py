"""ament_python package robotaxi_stack (src layout)."""

import os
import runpy

from setuptools import find_packages, setup

PACKAGE = 'robotaxi_stack'

# Executables: `<name>_node` console scripts (ros2 run / ros2 launch find them in lib/<package>)
# and the `robotaxi` CLI for people.
NODES = runpy.run_path('src/robotaxi_stack/bringup/executables.py')['NODE_EXECUTABLES']


def share_tree(folder):
    """data_files entries that install folder/** into share/<package>/folder/**."""
    entries = []
    for dirpath, _, filenames in os.walk(folder):
        files = [os.path.join(dirpath, f) for f in filenames if not f.endswith('.pyc')]
        if files:
            entries.append((os.path.join('share', PACKAGE, dirpath), files))
    return entries


setup(
    name=PACKAGE,
    version='0.1.0',
    package_dir={'': 'src'},
    packages=find_packages('src'),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + PACKAGE]),
        ('share/' + PACKAGE, ['package.xml']),
        *share_tree('launch'),
        *share_tree('config'),
        *share_tree('models'),
        *share_tree('scenarios'),
    ],
    install_requires=['setuptools'],
    zip_safe=False,
    maintainer='robotaxi_stack developers',
    maintainer_email='autonomy@robotaxi-stack.org',
    description='Onboard L4 autonomy stack for a driverless ride-hailing fleet.',
    license='Apache-2.0',
    tests_require=['pytest'],
    entry_points={
        'console_scripts': [
            'robotaxi = robotaxi_stack.bringup.cli:main',
            *(f'{name} = {module}:main' for name, module in NODES.items()),
        ],
    },
)
