"""Where the package's data (config/, launch/, models/, scenarios/) lives.

Installed (colcon, ros2 launch): share/robotaxi_stack from the ament index. Run from a source
checkout without an install: the repository root.
"""

from __future__ import annotations

import functools
import pathlib

PACKAGE = 'robotaxi_stack'
SOURCE_ROOT = pathlib.Path(__file__).resolve().parents[3]


@functools.lru_cache(maxsize=1)
def share_dir() -> pathlib.Path:
    try:
        from ament_index_python.packages import (PackageNotFoundError,
                                                 get_package_share_directory)
        try:
            return pathlib.Path(get_package_share_directory(PACKAGE))
        except (PackageNotFoundError, OSError):  # OSError: no AMENT_PREFIX_PATH at all
            pass
    except ImportError:
        pass
    return SOURCE_ROOT


def config_dir() -> pathlib.Path:
    return share_dir() / 'config'


def data_path(*parts: str) -> pathlib.Path:
    """A file below the share directory, e.g. data_path('config', 'stack.yaml')."""
    return share_dir().joinpath(*parts)
