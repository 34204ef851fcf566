#!/usr/bin/env python3
"""Point the include paths that the ROS 2 wheels' CMake exports hard-code at this venv.

The wheels are built under the manylinux prefix /opt/python/cpXY-cpXY and their
`*__rosidl_generator_pyExport.cmake` files name that prefix's Python and numpy include
directories. CMake refuses imported targets with missing include paths, so building
robotaxi_msgs fails until they name this interpreter's directories. Idempotent.
"""

import pathlib
import re
import sys
import sysconfig

import numpy

MANYLINUX_PREFIX = re.compile(r'/opt/python/cp3\d+-cp3\d+')


def fix_exports(venv: pathlib.Path) -> int:
    python_include = sysconfig.get_paths()['include']
    numpy_include = numpy.get_include()
    changed = 0
    for export in (venv / 'share').glob('*/cmake/*Export*.cmake'):
        text = export.read_text()
        if not MANYLINUX_PREFIX.search(text):
            continue
        prefix = MANYLINUX_PREFIX.search(text).group(0)
        text = text.replace(f'{prefix}/lib/python3.{sys.version_info.minor}/site-packages/'
                            'numpy/_core/include', numpy_include)
        text = re.sub(re.escape(prefix) + r'/include/python3\.\d+', python_include, text)
        export.write_text(text)
        changed += 1
    return changed


if __name__ == '__main__':
    venv_dir = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else '.venv')
    print(f'fix_wheel_cmake_paths: rewrote {fix_exports(venv_dir)} CMake export files')
