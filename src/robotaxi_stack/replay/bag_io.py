"""rosbag2 bags (sqlite3 or MCAP) written and read through rosbags: raw CDR in, raw CDR out.

A bag is a folder ``NAME/`` holding ``metadata.yaml`` and numbered storage files ``NAME_0.mcap``,
``NAME_1.mcap``, ... (``.db3`` for sqlite3), laid out as rosbag2 lays out a split recording, so
``ros2 bag info/play`` (Jazzy, Kilted), Foxglove and rosbags read it. Messages are stored as the
CDR bytes they arrived in (never re-serialised); every topic records its message definition and
RIHS01 type hash from `typestore`.

Splitting follows rosbag2: before a message is written, the current file is closed and the next
one opened when the file holds at least ``split_size_bytes`` of message data, or when the message
is ``split_duration_s`` or more (bag time) after the file's first message. ``metadata.yaml`` is
rewritten after every completed file and on close, so a recording that dies hard still leaves a
readable bag of its completed files; exceptions close the bag properly (context manager).

Timestamps are integer nanoseconds of the recording clock (ROS time, sim time under
use_sim_time). Pure module: no rclpy, no *_msgs.
"""

from __future__ import annotations

import heapq
import math
import operator
import shutil
import time
from dataclasses import dataclass
from io import StringIO
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, NamedTuple

from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.rosbag2.metadata import dump_qos_v9
from ruamel.yaml import YAML

from .typestore import ROS_DISTRO, UnknownMessageTypeError, ensure_types, get_typestore, \
    message_definition

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
    from types import TracebackType

    from rosbags.interfaces import Qos
    from rosbags.typesys.store import Typestore

BAG_FORMAT_VERSION = 9  # rosbag2 metadata version of Jazzy and Kilted
STORAGE_SUFFIXES = {'mcap': '.mcap', 'sqlite3': '.db3'}
_STORAGE_PLUGINS = {'mcap': StoragePlugin.MCAP, 'sqlite3': StoragePlugin.SQLITE3}
_STAGING_DIR = '.staging'
_CDR_HEADER_BYTES = 4


class BagError(ValueError):
    """Base of the bag errors."""


class BagWriteError(BagError):
    """A bag cannot be created or written, or a write call is invalid."""


class BagReadError(BagError):
    """A path is not a readable rosbag2 bag (missing, truncated, corrupt) or a query is invalid."""


class MessageDecodeError(BagError):
    """CDR bytes do not decode as the given message type."""


class BagMessage(NamedTuple):
    """One recorded message: ``timestamp_ns`` is the recording time, ``data`` the CDR bytes."""

    topic: str
    msgtype: str
    timestamp_ns: int
    data: bytes


@dataclass(frozen=True)
class BagTopicInfo:
    """A topic of a bag: type, message count, RIHS01 hash, the publishers' offered QoS."""

    name: str
    msgtype: str
    message_count: int
    type_hash: str
    offered_qos_profiles: tuple[Qos, ...]


@dataclass(frozen=True)
class BagInfo:
    """Summary of a bag. ``start_ns``/``end_ns`` are the first/last message times (0 if empty)."""

    path: Path
    storage: str
    files: tuple[str, ...]
    message_count: int
    start_ns: int
    end_ns: int
    topics: dict[str, BagTopicInfo]

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns


@dataclass
class _TopicRecord:
    msgtype: str
    msgdef: str
    type_hash: str
    offered_qos: tuple[Qos, ...]


@dataclass(frozen=True)
class _FileRecord:
    name: str
    start_ns: int
    end_ns: int
    message_count: int


def _positive_or_none(name: str, value: float | None, *, integer: bool) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            integer and not float(value).is_integer()):
        kind = 'an integer' if integer else 'a number'
        raise BagWriteError(f'{name} = {value!r}: must be {kind} > 0 or None')
    if not (math.isfinite(value) and value > 0):
        raise BagWriteError(f'{name} = {value!r}: must be finite and > 0, or None')
    return value


def _yaml() -> YAML:
    yaml = YAML(typ='safe')
    yaml.default_flow_style = False
    return yaml


class BagWriter:
    """Writes raw CDR messages into a (split) rosbag2 bag.

    Use as a context manager, or call `open` and `close`::

        with BagWriter(out / 'bag', storage='mcap', split_size_bytes=512 << 20) as bag:
            bag.add_topic('/control/command', 'robotaxi_msgs/msg/ControlCommand')
            bag.write('/control/command', stamp_ns, cdr_bytes)

    Args:
        path: bag folder to create; must not exist (bags are never overwritten).
        storage: 'mcap' (rosbag2's default) or 'sqlite3'.
        topics: record only these topics (`add_topic`/`write` of others return False);
            None records every added topic.
        split_size_bytes: start a new file once a file holds this many message bytes.
        split_duration_s: start a new file for a message this long (bag time) after the
            file's first message.
        typestore: where message definitions and hashes come from (default: `get_typestore`).
        custom_data: string pairs stored in metadata.yaml's custom_data.
        flush_interval_s: sqlite3 commits this often, so a hard kill loses at most this much
            of the open file (MCAP files are only readable once closed).

    """

    def __init__(self, path: str | Path, *, storage: str = 'mcap',
                 topics: Collection[str] | None = None,
                 split_size_bytes: int | None = None, split_duration_s: float | None = None,
                 typestore: Typestore | None = None,
                 custom_data: Mapping[str, str] | None = None,
                 flush_interval_s: float = 1.0) -> None:
        if storage not in _STORAGE_PLUGINS:
            raise BagWriteError(
                f'storage = {storage!r}: must be one of {sorted(_STORAGE_PLUGINS)}')
        self._split_size_bytes = _positive_or_none(
            'split_size_bytes', split_size_bytes, integer=True)
        duration_s = _positive_or_none('split_duration_s', split_duration_s, integer=False)
        self._split_duration_ns = None if duration_s is None else round(duration_s * 1e9)
        if _positive_or_none('flush_interval_s', flush_interval_s, integer=False) is None:
            raise BagWriteError('flush_interval_s = None: must be finite and > 0')
        if custom_data is not None and not all(
                isinstance(k, str) and isinstance(v, str) for k, v in custom_data.items()):
            raise BagWriteError(f'custom_data = {custom_data!r}: keys and values must be str')
        if isinstance(topics, str):
            raise BagWriteError(f'topics = {topics!r}: must be a collection of topic names')
        self.path = Path(path)
        self.storage = storage
        self._flush_interval_s = float(flush_interval_s)
        self._selected = None if topics is None else frozenset(topics)
        self._store = typestore
        self._custom_data = dict(custom_data) if custom_data else None
        self._state = 'new'
        self._topics: dict[str, _TopicRecord] = {}
        self._closed_files: list[_FileRecord] = []
        self._closed_counts: dict[str, int] = {}
        self._writer: Writer | None = None
        self._connections: dict[str, object] = {}
        self._file_counts: dict[str, int] = {}
        self._file_bytes = 0
        self._file_start_ns = 0
        self._file_end_ns = 0
        self._last_flush_s = 0.0

    # -- lifecycle -------------------------------------------------------------------------

    def open(self) -> BagWriter:
        """Create the bag folder and its first file."""
        if self._state != 'new':
            raise BagWriteError(f'bag {self.path} was already opened')
        if self.path.exists():
            raise BagWriteError(f'{self.path} exists already; a bag is never overwritten')
        try:
            self.path.mkdir(parents=True)
        except OSError as exc:
            raise BagWriteError(f'cannot create bag folder {self.path}: {exc}') from exc
        self._open_file()
        self._state = 'open'
        return self

    def close(self) -> BagInfo:
        """Close the open file and write the final metadata.yaml. Idempotent."""
        if self._state == 'open':
            self._state = 'closed'
            try:
                self._close_file()
            finally:
                try:
                    (self.path / _STAGING_DIR).rmdir()
                except OSError:
                    pass  # a failed close leaves the partial file there to recover
        return self.info

    def __enter__(self) -> BagWriter:
        return self.open()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
            return
        # Keep what was recorded; the original exception matters more than a close failure.
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass

    @property
    def is_open(self) -> bool:
        return self._state == 'open'

    # -- topics and messages ---------------------------------------------------------------

    def add_topic(self, topic: str, msgtype: str,
                  offered_qos_profiles: Sequence[Qos] = ()) -> bool:
        """Register `topic` with ROS type `msgtype` (``pkg/msg/Name``).

        Returns False (and records nothing) for a topic outside the selection. Adding a topic
        again with the same type is a no-op.

        Raises:
            BagWriteError: bag not open, bad topic name, unknown type, or a second type.

        """
        self._require_open()
        if not isinstance(topic, str) or not topic.startswith('/'):
            raise BagWriteError(f'topic = {topic!r}: must be an absolute name like /a/b')
        if self._selected is not None and topic not in self._selected:
            return False
        if topic in self._topics:
            if self._topics[topic].msgtype != msgtype:
                raise BagWriteError(
                    f'topic {topic} is recorded as {self._topics[topic].msgtype}; '
                    f'it cannot also carry {msgtype}')
            return True
        try:
            msgdef, type_hash = message_definition(msgtype, self._store)
        except UnknownMessageTypeError as exc:
            raise BagWriteError(f'topic {topic}: {exc}') from exc
        record = _TopicRecord(msgtype, msgdef, type_hash, tuple(offered_qos_profiles))
        assert self._writer is not None
        self._connections[topic] = self._add_connection(self._writer, topic, record)
        self._topics[topic] = record
        self._file_counts[topic] = 0
        self._closed_counts[topic] = 0
        return True

    def write(self, topic: str, timestamp_ns: int, data: bytes | bytearray | memoryview) -> bool:
        """Append one message (`data`: CDR bytes incl. the 4-byte encapsulation header).

        Returns False for a topic outside the selection.

        Raises:
            BagWriteError: bag not open, topic not added, negative/non-integer timestamp,
                data shorter than a CDR header.

        """
        self._require_open()
        record = self._topics.get(topic)
        if record is None:
            if self._selected is not None and topic not in self._selected:
                return False
            raise BagWriteError(f'topic {topic!r} was not added to bag {self.path} '
                                '(call add_topic first)')
        try:
            stamp_ns = operator.index(timestamp_ns)
        except TypeError:
            raise BagWriteError(f'{topic}: timestamp_ns = {timestamp_ns!r}: must be an '
                                'integer number of nanoseconds') from None
        if stamp_ns < 0:
            raise BagWriteError(f'{topic}: timestamp_ns = {stamp_ns}: must be >= 0')
        size = len(data)
        if size < _CDR_HEADER_BYTES:
            raise BagWriteError(f'{topic}: {size} bytes is no CDR message (a CDR message '
                                f'starts with a {_CDR_HEADER_BYTES}-byte header)')
        if self._should_split(stamp_ns):
            try:
                self._close_file()
                self._open_file()
            except BaseException:
                self._state = 'closed'  # the completed files stay readable
                raise
        assert self._writer is not None
        first_in_file = not any(self._file_counts.values())
        self._writer.write(self._connections[topic], stamp_ns, data)
        if first_in_file:
            self._file_start_ns = self._file_end_ns = stamp_ns
        else:
            self._file_start_ns = min(self._file_start_ns, stamp_ns)
            self._file_end_ns = max(self._file_end_ns, stamp_ns)
        self._file_counts[topic] += 1
        self._file_bytes += size
        self._flush_if_due()
        return True

    @property
    def message_counts(self) -> dict[str, int]:
        """Messages written so far per added topic."""
        return {t: self._closed_counts[t] + self._file_counts.get(t, 0) for t in self._topics}

    @property
    def files(self) -> list[Path]:
        """Completed storage files (the open one is added when it closes)."""
        return [self.path / f.name for f in self._closed_files]

    @property
    def info(self) -> BagInfo:
        """Summary of the completed files plus the topics added."""
        return self._summary(self._closed_files, self._closed_counts)

    # -- internals -------------------------------------------------------------------------

    def _require_open(self) -> None:
        if self._state != 'open':
            state = 'not opened yet' if self._state == 'new' else 'closed'
            raise BagWriteError(f'bag {self.path} is {state}')

    def _should_split(self, stamp_ns: int) -> bool:
        if not any(self._file_counts.values()):
            return False
        if self._split_size_bytes is not None and self._file_bytes >= self._split_size_bytes:
            return True
        return (self._split_duration_ns is not None
                and stamp_ns - self._file_start_ns >= self._split_duration_ns)

    def _staging_path(self) -> Path:
        # rosbags names a storage file after its folder, so file NAME_i is written in a
        # staging folder NAME_i and moved beside metadata.yaml once complete.
        return self.path / _STAGING_DIR / f'{self.path.name}_{len(self._closed_files)}'

    def _open_file(self) -> None:
        staging = self._staging_path()
        try:
            staging.parent.mkdir(exist_ok=True)
            writer = Writer(staging, version=BAG_FORMAT_VERSION,
                            storage_plugin=_STORAGE_PLUGINS[self.storage])
            writer.open()
        except Exception as exc:
            raise BagWriteError(f'cannot open bag file in {staging}: {exc}') from exc
        self._connections = {topic: self._add_connection(writer, topic, record)
                             for topic, record in self._topics.items()}
        self._writer = writer
        self._file_counts = dict.fromkeys(self._topics, 0)
        self._file_bytes = 0
        self._file_start_ns = self._file_end_ns = 0
        self._last_flush_s = time.monotonic()

    @staticmethod
    def _add_connection(writer: Writer, topic: str, record: _TopicRecord) -> object:
        return writer.add_connection(
            topic, record.msgtype, msgdef=record.msgdef, rihs01=record.type_hash,
            offered_qos_profiles=list(record.offered_qos))

    def _close_file(self) -> None:
        writer, self._writer = self._writer, None
        if writer is None:
            return
        staging = self._staging_path()
        try:
            writer.close()
            produced = staging / f'{staging.name}{STORAGE_SUFFIXES[self.storage]}'
            produced.replace(self.path / produced.name)
            shutil.rmtree(staging)
        except Exception as exc:
            raise BagWriteError(f'cannot close bag file in {staging}: {exc}') from exc
        count = sum(self._file_counts.values())
        self._closed_files.append(_FileRecord(
            produced.name, self._file_start_ns, self._file_end_ns, count))
        for topic, n in self._file_counts.items():
            self._closed_counts[topic] += n
        self._file_counts = dict.fromkeys(self._topics, 0)
        self._write_metadata()

    def _flush_if_due(self) -> None:
        now_s = time.monotonic()
        if now_s - self._last_flush_s < self._flush_interval_s:
            return
        self._last_flush_s = now_s
        # rosbags' sqlite3 storage commits only on close; committing its connection early
        # bounds what a hard kill loses. No public hook exists, hence the guarded lookup.
        conn = getattr(getattr(self._writer, 'storage', None), 'conn', None)
        if conn is not None and hasattr(conn, 'commit'):
            conn.commit()

    def _summary(self, files: Sequence[_FileRecord], counts: Mapping[str, int]) -> BagInfo:
        nonempty = [f for f in files if f.message_count]
        start_ns = min((f.start_ns for f in nonempty), default=0)
        end_ns = max((f.end_ns for f in nonempty), default=0)
        topics = {
            name: BagTopicInfo(name, rec.msgtype, counts.get(name, 0), rec.type_hash,
                               rec.offered_qos)
            for name, rec in self._topics.items()}
        return BagInfo(self.path, self.storage, tuple(f.name for f in files),
                       sum(f.message_count for f in files), start_ns, end_ns, topics)

    def _write_metadata(self) -> None:
        info = self.info
        files = [f.name for f in self._closed_files]
        metadata = {'rosbag2_bagfile_information': {
            'version': BAG_FORMAT_VERSION,
            'storage_identifier': self.storage,
            'relative_file_paths': files,
            'duration': {'nanoseconds': info.duration_ns},
            'starting_time': {'nanoseconds_since_epoch': info.start_ns},
            'message_count': info.message_count,
            'topics_with_message_count': [
                {'topic_metadata': {
                    'name': topic.name,
                    'type': topic.msgtype,
                    'serialization_format': 'cdr',
                    'offered_qos_profiles': dump_qos_v9(list(topic.offered_qos_profiles)),
                    'type_description_hash': topic.type_hash},
                 'message_count': topic.message_count}
                for topic in info.topics.values()],
            'compression_format': '',
            'compression_mode': '',
            'files': [
                {'path': f.name,
                 'starting_time': {'nanoseconds_since_epoch': f.start_ns},
                 'duration': {'nanoseconds': f.end_ns - f.start_ns},
                 'message_count': f.message_count}
                for f in self._closed_files],
            'custom_data': self._custom_data,
            'ros_distro': ROS_DISTRO,
        }}
        text = StringIO()
        _yaml().dump(metadata, text)
        target = self.path / 'metadata.yaml'
        tmp = target.with_suffix('.yaml.tmp')
        tmp.write_text(text.getvalue(), 'utf8')
        tmp.replace(target)


class BagReader:
    """Reads a rosbag2 bag folder (sqlite3 or MCAP, split or not) or a single .db3/.mcap file.

    Use as a context manager; `messages` yields `BagMessage` in time order (split files are
    merged by timestamp; within a file, ties keep the storage order).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._reader: Reader | None = None
        self._files: list[Path] = []
        self._info: BagInfo | None = None

    def open(self) -> BagReader:
        if self._reader is not None:
            raise BagReadError(f'bag {self.path} is already open')
        if not self.path.exists():
            raise BagReadError(f'no bag at {self.path}')
        if self.path.is_dir() and not (self.path / 'metadata.yaml').is_file():
            found = sorted(str(p.relative_to(self.path)) for suffix in STORAGE_SUFFIXES.values()
                           for p in self.path.rglob(f'*{suffix}'))
            raise BagReadError(
                f'{self.path} has no metadata.yaml, so it is no complete rosbag2 bag; storage '
                f'files in it: {found} (a .db3 file of a killed recording can be read alone)')
        reader = self._guard(lambda: Reader(self.path))
        try:
            self._guard(reader.open)
        except BagReadError as exc:
            culprit = self._first_unreadable_file()
            if culprit is None:
                raise
            raise BagReadError(f'{exc}; first unreadable file: {culprit}') from exc.__cause__
        self._reader = reader
        try:
            self._files = self._storage_files()
            self._info = self._make_info()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

    def __enter__(self) -> BagReader:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def info(self) -> BagInfo:
        if self._info is None:
            raise BagReadError(f'bag {self.path} is not open')
        return self._info

    def messages(self, topics: Iterable[str] | None = None, start_ns: int | None = None,
                 stop_ns: int | None = None) -> Iterator[BagMessage]:
        """Messages of `topics` (all if None) with start_ns <= timestamp < stop_ns.

        Raises:
            BagReadError: bag not open, a requested topic is not in the bag; while iterating,
                a truncated or corrupt storage file.

        """
        reader = self._reader
        if reader is None:
            raise BagReadError(f'bag {self.path} is not open')
        if isinstance(topics, str):
            raise BagReadError(f'topics = {topics!r}: must be a collection of topic names')
        wanted = None if topics is None else set(topics)
        if wanted is not None and (missing := wanted - set(self.info.topics)):
            raise BagReadError(f'topics {sorted(missing)} are not in bag {self.path} '
                               f'(it has {sorted(self.info.topics)})')
        connections = [c for c in reader.connections if wanted is None or c.topic in wanted]
        if not connections:
            return iter(())
        # A full read must see every message the metadata counts: catches damaged chunks that
        # a reader would otherwise skip silently.
        expected = None if start_ns is not None or stop_ns is not None else sum(
            t.message_count for t in self.info.topics.values()
            if wanted is None or t.name in wanted)
        if len(self._files) > 1 and not reader.compression_mode:
            return self._guarded(self._merged(wanted, start_ns, stop_ns), expected)
        stream = (BagMessage(c.topic, c.msgtype, ts, _as_bytes(data))
                  for c, ts, data in reader.messages(connections, start_ns, stop_ns))
        return self._guarded(stream, expected)

    # -- internals -------------------------------------------------------------------------

    def _guard(self, action):  # type: ignore[no-untyped-def]
        try:
            return action()
        except BagError:
            raise
        except Exception as exc:  # rosbags, sqlite and OS errors: name the bag instead
            raise BagReadError(f'cannot read bag {self.path}: {exc}') from exc

    def _guarded(self, stream: Iterator[BagMessage],
                 expected_count: int | None) -> Iterator[BagMessage]:
        count = 0
        try:
            for message in stream:
                count += 1
                yield message
        except BagError:
            raise
        except Exception as exc:
            raise BagReadError(f'bag {self.path} is truncated or corrupt after {count} '
                               f'messages: {exc}') from exc
        if expected_count is not None and count != expected_count:
            raise BagReadError(f'bag {self.path} is corrupt: read {count} messages where its '
                               f'metadata counts {expected_count}')

    def _first_unreadable_file(self) -> str | None:
        if not self.path.is_dir():
            return None
        try:
            files = self._storage_files()
        except Exception:  # noqa: BLE001 - the metadata itself is what failed
            return None
        for path in files:
            try:
                with Reader(path):
                    pass
            except Exception as exc:  # noqa: BLE001
                return f'{path.name} ({exc})'
        return None

    def _merged(self, wanted: set[str] | None, start_ns: int | None,
                stop_ns: int | None) -> Iterator[BagMessage]:
        # Each storage file is in time order on its own; a k-way merge keeps the whole bag in
        # time order even where split files overlap (e.g. out-of-order stamps at a split).
        readers = [Reader(path) for path in self._files]
        opened: list[Reader] = []
        try:
            for reader in readers:
                reader.open()
                opened.append(reader)
            streams = [
                (BagMessage(c.topic, c.msgtype, ts, _as_bytes(data))
                 for c, ts, data in reader.messages(
                     [c for c in reader.connections if wanted is None or c.topic in wanted],
                     start_ns, stop_ns))
                for reader in opened]
            yield from heapq.merge(*streams, key=operator.attrgetter('timestamp_ns'))
        finally:
            for reader in opened:
                reader.close()

    def _storage_files(self) -> list[Path]:
        if not self.path.is_dir():
            return [self.path]
        raw = (self.path / 'metadata.yaml').read_text()
        meta = _yaml().load(raw)['rosbag2_bagfile_information']
        return [self.path / PurePath(p).name for p in meta['relative_file_paths']]

    def _make_info(self) -> BagInfo:
        reader = self._reader
        assert reader is not None
        storage = 'mcap' if all(p.suffix == '.mcap' for p in self._files) else 'sqlite3'
        topics: dict[str, BagTopicInfo] = {}
        for name, topic in reader.topics.items():
            first = topic.connections[0]
            msgtype = topic.msgtype or first.msgtype
            qos = tuple(getattr(first.ext, 'offered_qos_profiles', ()))
            topics[name] = BagTopicInfo(name, msgtype, topic.msgcount, first.digest, qos)
        count = reader.message_count
        # rosbags reports end_time one past the last message.
        start_ns = reader.start_time if count else 0
        end_ns = reader.end_time - 1 if count else 0
        return BagInfo(self.path, storage, tuple(p.name for p in self._files), count,
                       start_ns, end_ns, topics)


def _as_bytes(data: bytes | memoryview) -> bytes:
    return data if isinstance(data, bytes) else bytes(data)


def read_bag_info(path: str | Path) -> BagInfo:
    """Summary of the bag at `path` (see `BagReader`)."""
    with BagReader(path) as reader:
        return reader.info


def read_bag(path: str | Path, topics: Iterable[str] | None = None,
             start_ns: int | None = None, stop_ns: int | None = None) -> Iterator[BagMessage]:
    """``(topic, msgtype, timestamp_ns, cdr_bytes)`` of a bag in time order.

    The bag is opened (and checked) before this returns and closed when the iterator ends.

    Raises:
        BagReadError: not a readable bag, a requested topic is missing; while iterating, a
            truncated or corrupt file.

    """
    reader = BagReader(path).open()
    try:
        stream = reader.messages(topics, start_ns, stop_ns)
    except BaseException:
        reader.close()
        raise

    def iterate() -> Iterator[BagMessage]:
        try:
            yield from stream
        finally:
            reader.close()

    return iterate()


def deserialize(data: bytes | memoryview, msgtype: str,
                typestore: Typestore | None = None) -> object:
    """Decode CDR bytes into a rosbags message object of `msgtype` (for analysis code).

    Raises:
        UnknownMessageTypeError: the type is unknown.
        MessageDecodeError: the bytes are not a `msgtype` message.

    """
    store = get_typestore() if typestore is None else typestore
    ensure_types(store, [msgtype])
    try:
        return store.deserialize_cdr(data, msgtype)
    except Exception as exc:  # rosbags' SerdeError and struct errors
        raise MessageDecodeError(
            f'{len(data)} bytes do not decode as {msgtype}: {exc}') from exc


def serialize(message: object, msgtype: str, typestore: Typestore | None = None) -> bytes:
    """Encode a rosbags message object as little-endian CDR (for tools writing bags).

    Raises:
        UnknownMessageTypeError: the type is unknown.
        MessageDecodeError: the object does not fit `msgtype`.

    """
    store = get_typestore() if typestore is None else typestore
    ensure_types(store, [msgtype])
    try:
        return bytes(store.serialize_cdr(message, msgtype))
    except Exception as exc:
        raise MessageDecodeError(f'{message!r} does not encode as {msgtype}: {exc}') from exc
