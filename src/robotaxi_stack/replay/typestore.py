"""A rosbags type store for the stack's bags: stock ROS 2 Kilted types plus robotaxi_msgs.

Bags carry, per topic, the message definition (``ros2msg`` text) and its RIHS01 type hash, so a
real ``ros2 bag`` (Jazzy/Kilted), Foxglove or rosbags can decode them without this package. The
stock store supplies the standard packages (std/geometry/sensor/nav/diagnostic/rosgraph msgs);
robotaxi_msgs is parsed from its ``.msg``/``.srv`` files: the installed share directory when
ament_index finds it (that is what the running nodes were generated from), else the source tree.
Types of any other installed interface package are loaded on demand by `ensure_types`.

Pure module: rosbags and ament_index_python only, no rclpy.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import TYPE_CHECKING

from rosbags.interfaces import Nodetype
from rosbags.typesys import Stores, get_typestore as _get_stock_typestore, get_types_from_msg

if TYPE_CHECKING:
    from collections.abc import Iterable

    from rosbags.interfaces.typing import Typesdict
    from rosbags.typesys.store import Typestore

# Kilted is the distro of the rclpy wheels the stack runs on; its standard message definitions
# and hashes are the ones Jazzy's ros2 bag also reads.
STOCK_STORE = Stores.ROS2_KILTED
ROS_DISTRO = 'kilted'
CUSTOM_PACKAGE = 'robotaxi_msgs'

# src/robotaxi_stack/replay/typestore.py -> repository root is three folders above replay/.
_SOURCE_INTERFACE_DIR = Path(__file__).resolve().parents[3] / 'interfaces' / CUSTOM_PACKAGE

_PRIMITIVES = frozenset({
    'bool', 'byte', 'char', 'float32', 'float64', 'int8', 'uint8', 'int16', 'uint16',
    'int32', 'uint32', 'int64', 'uint64', 'string', 'wstring',
})
_TYPE_NAME = re.compile(r'^[A-Za-z][A-Za-z0-9_]*/(msg|srv)/[A-Za-z][A-Za-z0-9_]*$')


class UnknownMessageTypeError(ValueError):
    """A message type is neither in the stock store nor in an installed interface package."""


def package_share_dir(package: str) -> Path | None:
    """Installed share directory of `package` via the ament index, or None if not installed."""
    try:
        from ament_index_python.packages import (
            PackageNotFoundError, get_package_share_directory)
    except ImportError:
        return None
    try:
        return Path(get_package_share_directory(package))
    except (PackageNotFoundError, ValueError, LookupError):
        return None


def custom_interface_dir() -> Path:
    """Folder holding robotaxi_msgs' msg/ and srv/: installed share dir, else the source tree.

    Raises:
        UnknownMessageTypeError: neither location has a msg/ folder.

    """
    for candidate in (package_share_dir(CUSTOM_PACKAGE), _SOURCE_INTERFACE_DIR):
        if candidate is not None and (candidate / 'msg').is_dir():
            return candidate
    raise UnknownMessageTypeError(
        f'{CUSTOM_PACKAGE} definitions not found: not installed (ament index) and no '
        f'{_SOURCE_INTERFACE_DIR}/msg')


def _qualify_relative_types(text: str, package: str) -> str:
    """Prefix bare message names in a .msg/.srv body with `package/`.

    rosbags resolves a bare name relative to the type being parsed, which for a service part
    (``pkg/srv/X_Request``) would point into ``pkg/srv/msg``; interface files always mean the
    package's ``msg`` namespace.
    """
    lines = []
    for line in text.splitlines():
        body = line.split('#', 1)[0].strip()
        if body and body != '---':
            ftype, _, rest = body.partition(' ')
            base = re.split(r'[\[<]', ftype, maxsplit=1)[0]
            if '/' not in base and base not in _PRIMITIVES and base != 'Header':
                line = f'{package}/{ftype} {rest}'
        lines.append(line)
    return '\n'.join(lines)


def _parse_msg_file(path: Path, msgtype: str) -> Typesdict:
    return get_types_from_msg(path.read_text(), msgtype)


def _parse_srv_file(path: Path, package: str) -> Typesdict:
    """``<package>/srv/<Name>_Request`` and ``_Response`` (the rosidl names) of a .srv file."""
    text = _qualify_relative_types(path.read_text(), package)
    parts = re.split(r'^---\s*$', text, maxsplit=1, flags=re.MULTILINE)
    if len(parts) != 2:
        raise UnknownMessageTypeError(f'{path}: a service needs one --- separator')
    types: Typesdict = {}
    for suffix, part in zip(('Request', 'Response'), parts):
        parsed = get_types_from_msg(part, f'{package}/srv/{path.stem}_{suffix}')
        # rosbags files a srv part under pkg/srv/msg/...: rename to the rosidl name.
        types.update({key.replace('/srv/msg/', '/srv/'): val for key, val in parsed.items()})
    return types


def _parse_files(paths: Iterable[Path], package: str) -> Typesdict:
    types: Typesdict = {}
    for path in paths:
        try:
            if path.suffix == '.srv':
                types.update(_parse_srv_file(path, package))
            else:
                types.update(_parse_msg_file(path, f'{package}/msg/{path.stem}'))
        except UnknownMessageTypeError:
            raise
        except Exception as exc:  # rosbags raises its own parser errors; name the file.
            raise UnknownMessageTypeError(f'cannot parse interface file {path}: {exc}') from exc
    return types


def load_interface_types(interface_dir: Path, package: str) -> Typesdict:
    """Parse every ``msg/*.msg`` and ``srv/*.srv`` under `interface_dir` into rosbags types.

    Services become ``package/srv/<Name>_Request`` and ``_Response`` (what rosidl names them).

    Raises:
        UnknownMessageTypeError: the folder has no interface files, or one does not parse.

    """
    paths = sorted((interface_dir / 'msg').glob('*.msg')) + sorted(
        (interface_dir / 'srv').glob('*.srv'))
    if not paths:
        raise UnknownMessageTypeError(f'no .msg or .srv files under {interface_dir}')
    return _parse_files(paths, package)


def _referenced_types(fielddesc: object) -> Iterable[str]:
    """Message type names a rosbags field description refers to (through arrays too)."""
    nodetype, spec = fielddesc  # type: ignore[misc]
    if nodetype == Nodetype.NAME:
        yield spec
    elif nodetype in (Nodetype.ARRAY, Nodetype.SEQUENCE):
        yield from _referenced_types(spec[0])


def ensure_types(store: Typestore, msgtypes: Iterable[str]) -> None:
    """Register `msgtypes` and their dependencies in `store` from installed share directories.

    Types already in the store are left alone. A type ``pkg/msg/Name`` is read from
    ``<share of pkg>/msg/Name.msg`` (services from ``srv/Name.srv``).

    Raises:
        UnknownMessageTypeError: a type name is malformed, or no installed package defines it.

    """
    pending = [t for t in msgtypes if t not in store.fielddefs]
    found: Typesdict = {}
    while pending:
        msgtype = pending.pop()
        if msgtype in found or msgtype in store.fielddefs:
            continue
        if not _TYPE_NAME.match(msgtype):
            raise UnknownMessageTypeError(
                f'message type {msgtype!r} is not of the form package/msg/Name')
        package, kind, name = msgtype.split('/')
        share = (custom_interface_dir() if package == CUSTOM_PACKAGE
                 else package_share_dir(package))
        if share is None:
            raise UnknownMessageTypeError(
                f'message type {msgtype!r}: not in the {STOCK_STORE.name} store and package '
                f'{package!r} is not installed')
        if kind == 'srv':
            base = re.sub(r'_(Request|Response)$', '', name)
            path = share / 'srv' / f'{base}.srv'
        else:
            path = share / 'msg' / f'{name}.msg'
        parsed = _parse_files([path], package) if path.is_file() else {}
        if msgtype not in parsed:
            raise UnknownMessageTypeError(
                f'message type {msgtype!r}: package {package!r} at {share} defines no '
                f'{kind}/{name}')
        found.update({key: val for key, val in parsed.items() if key not in store.fielddefs})
        for _, fielddesc in parsed[msgtype][1]:
            pending.extend(_referenced_types(fielddesc))
    if found:
        store.register(found)


def new_typestore() -> Typestore:
    """A fresh store: stock Kilted types plus robotaxi_msgs (messages and services)."""
    store = _get_stock_typestore(STOCK_STORE)
    store.register(load_interface_types(custom_interface_dir(), CUSTOM_PACKAGE))
    return store


@functools.lru_cache(maxsize=1)
def get_typestore() -> Typestore:
    """The process-wide store (see `new_typestore`); `ensure_types` may extend it."""
    return new_typestore()


def message_definition(msgtype: str, store: Typestore | None = None) -> tuple[str, str]:
    """(``ros2msg`` definition text, RIHS01 hash) of `msgtype`, as rosbag2 stores them.

    Raises:
        UnknownMessageTypeError: the type cannot be found (see `ensure_types`).

    """
    store = get_typestore() if store is None else store
    ensure_types(store, [msgtype])
    msgdef, _ = store.generate_msgdef(msgtype, ros_version=2)
    return msgdef, store.hash_rihs01(msgtype)
