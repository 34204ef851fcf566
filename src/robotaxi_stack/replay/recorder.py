"""Records ROS 2 topics into a rosbag2 bag: `BagRecorder` and the ``robotaxi record`` CLI.

Subscriptions are raw (``raw=True``): the CDR bytes DDS delivers go into the bag untouched, so
recording costs no deserialisation. Each message is stamped with the node clock at receipt, which
is /clock time when the node runs with ``use_sim_time``.

QoS: a topic is subscribed with its contract reliability and durability (`common.qos`; best
effort for sensor data, reliable otherwise, transient local for ride state) unless publishers are
already known, in which case the subscription matches what they offer (best effort if any of them
is, volatile if any of them is), as ``ros2 bag record`` does. A publisher appearing later that a
subscription cannot match makes the recorder re-subscribe with the relaxed policy. The history
depth is large (`RECORD_DEPTH`) so bursts are buffered, not dropped. Requested topics whose type
is known (contract table or graph) are subscribed at once; others when a publisher appears.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import math
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import rclpy
from rclpy.duration import Duration, Infinite
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, LivelinessPolicy, QoSProfile,
                       ReliabilityPolicy)
from rclpy.signals import SignalHandlerOptions
from rosbags.interfaces import (Qos, QosDurability, QosHistory, QosLiveliness, QosReliability,
                                QosTime)

from ..common.qos import qos_for_topic
from ..common.topics import CONTRACT_TOPICS
from .bag_io import STORAGE_SUFFIXES, BagError, BagInfo, BagWriter
from .typestore import UnknownMessageTypeError

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from rclpy.node import Node
    from rclpy.subscription import Subscription

RECORD_DEPTH = 100
# Replaying these would inject stale log lines and parameter changes into a live graph.
EXCLUDED_BY_DEFAULT = ('/rosout', '/parameter_events')
DISCOVERY_PERIOD_S = 0.2
DRAIN_LIMIT_S = 2.0
_INFINITE_NS = Infinite.nanoseconds
# rosbag2 writes an infinite QoS duration as the largest rmw_time_t.
_BAG_INFINITE = QosTime(2**31 - 1, 2**32 - 1)


def message_class(msgtype: str) -> type:
    """The generated Python class of ``pkg/msg/Name`` (e.g. robotaxi_msgs.msg.ControlCommand).

    Raises:
        UnknownMessageTypeError: malformed name or the package's Python module is not installed.

    """
    parts = msgtype.split('/')
    if len(parts) != 3 or parts[1] not in ('msg', 'srv') or not all(parts):
        raise UnknownMessageTypeError(
            f'message type {msgtype!r} is not of the form package/msg/Name')
    package, kind, name = parts
    try:
        return getattr(importlib.import_module(f'{package}.{kind}'), name)
    except (ImportError, AttributeError) as exc:
        raise UnknownMessageTypeError(
            f'message type {msgtype!r} has no Python class here ({exc}); is {package} built '
            'and sourced?') from exc


def _bag_time(duration: Duration) -> QosTime:
    nanoseconds = duration.nanoseconds
    if nanoseconds >= _INFINITE_NS:
        return _BAG_INFINITE
    sec, nsec = divmod(max(nanoseconds, 0), 1_000_000_000)
    return QosTime(min(sec, 2**31 - 1), nsec)


def _enum_by_name(enum_type, name: str, fallback):  # type: ignore[no-untyped-def]
    return enum_type.__members__.get(name, fallback)


def to_bag_qos(profile: QoSProfile) -> Qos:
    """An rclpy QoS profile as rosbags' `Qos` (what metadata.yaml stores as offered QoS)."""
    return Qos(
        history=_enum_by_name(QosHistory, profile.history.name, QosHistory.UNKNOWN),
        depth=int(profile.depth),
        reliability=_enum_by_name(QosReliability, profile.reliability.name,
                                  QosReliability.UNKNOWN),
        durability=_enum_by_name(QosDurability, profile.durability.name, QosDurability.UNKNOWN),
        deadline=_bag_time(profile.deadline),
        lifespan=_bag_time(profile.lifespan),
        liveliness=_enum_by_name(QosLiveliness, profile.liveliness.name, QosLiveliness.UNKNOWN),
        liveliness_lease_duration=_bag_time(profile.liveliness_lease_duration),
        avoid_ros_namespace_conventions=bool(profile.avoid_ros_namespace_conventions),
    )


def from_bag_qos(qos: Qos) -> QoSProfile:
    """History, depth, reliability and durability of a recorded profile as rclpy QoS.

    Deadline, lifespan and liveliness are left at their defaults: replayed timing differs from
    the recording, so re-offering them would only produce spurious QoS events.
    """
    history = _enum_by_name(HistoryPolicy, qos.history.name, HistoryPolicy.KEEP_LAST)
    if history not in (HistoryPolicy.KEEP_LAST, HistoryPolicy.KEEP_ALL):
        history = HistoryPolicy.KEEP_LAST
    return QoSProfile(
        history=history, depth=max(int(qos.depth), 1),
        reliability=_enum_by_name(ReliabilityPolicy, qos.reliability.name,
                                  ReliabilityPolicy.RELIABLE),
        durability=_enum_by_name(DurabilityPolicy, qos.durability.name,
                                 DurabilityPolicy.VOLATILE),
        liveliness=LivelinessPolicy.SYSTEM_DEFAULT)


def recording_qos(topic: str, offered: Sequence[QoSProfile] = ()) -> QoSProfile:
    """Subscription QoS that records `topic` from publishers offering `offered` (may be empty).

    Without publishers: the contract's reliability and durability. With publishers: reliable only
    if all of them are, transient local only if all of them are, so every one of them matches.
    """
    contract = qos_for_topic(topic)
    reliability, durability = contract.reliability, contract.durability
    if offered:
        reliability = (ReliabilityPolicy.RELIABLE
                       if all(p.reliability == ReliabilityPolicy.RELIABLE for p in offered)
                       else ReliabilityPolicy.BEST_EFFORT)
        durability = (DurabilityPolicy.TRANSIENT_LOCAL
                      if all(p.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in offered)
                      else DurabilityPolicy.VOLATILE)
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=RECORD_DEPTH,
                      reliability=reliability, durability=durability)


def _is_hidden(topic: str) -> bool:
    return any(part.startswith('_') for part in topic.split('/'))


class BagRecorder:
    """Subscribes to topics on `node` and writes every message into a new bag at `out_dir`.

    The caller spins `node`; the recorder only adds subscriptions and a discovery timer.

    Args:
        node: node to subscribe with; its clock stamps the messages.
        out_dir: bag folder to create (must not exist).
        topics: topic names to record; None records the contract topics
            (`common.topics.CONTRACT_TOPICS`).
        storage: 'mcap' or 'sqlite3'.
        split_size_bytes: split into a new file after this many message bytes (None: no split).
        split_duration_s: split into a new file after this much bag time (None: no split).
        record_all: record every topic that has a publisher (except `exclude` and hidden
            topics), discovered continuously; `topics` is then ignored.
        exclude: topics never recorded.
        discovery_period_s: how often the graph is checked for new topics and publishers.
        qos_overrides: topic -> subscription QoS for publishers the caller knows (the scenario
            runner's reliable simulator sensors), used as given and never relaxed.
        on_message: called with (topic, serialized message) on receipt, before writing.

    Raises:
        BagError: bad bag settings or the output exists (see `bag_io.BagWriter`).
        ValueError: a topic name is not absolute.

    """

    def __init__(self, node: Node, out_dir: str | Path, topics: Iterable[str] | None = None,
                 storage: str = 'mcap', split_size_bytes: int | None = None,
                 split_duration_s: float | None = None, *, record_all: bool = False,
                 exclude: Iterable[str] = EXCLUDED_BY_DEFAULT,
                 discovery_period_s: float = DISCOVERY_PERIOD_S,
                 qos_overrides: dict[str, QoSProfile] | None = None,
                 on_message: Callable[[str, bytes], None] | None = None) -> None:
        if isinstance(topics, str):
            raise ValueError(f'topics = {topics!r}: must be a list of topic names')
        requested = list(CONTRACT_TOPICS) if topics is None else list(dict.fromkeys(topics))
        bad = [t for t in requested if not isinstance(t, str) or not t.startswith('/')]
        if bad:
            raise ValueError(f'topics {bad}: names must be absolute, like /control/command')
        if not discovery_period_s > 0.0:
            raise ValueError(f'discovery_period_s = {discovery_period_s!r}: must be > 0')
        self._node = node
        self._clock = node.get_clock()
        self._requested = None if record_all else requested
        self._exclude = frozenset(exclude)
        self._qos_overrides = dict(qos_overrides or {})
        self._on_message_hook = on_message
        self._lock = threading.Lock()
        self._subscriptions: dict[str, tuple[Subscription, QoSProfile, type]] = {}
        self._skipped: dict[str, str] = {}
        self._writer = BagWriter(out_dir, storage=storage, split_size_bytes=split_size_bytes,
                                 split_duration_s=split_duration_s,
                                 custom_data={'recorder': 'robotaxi_stack'}).open()
        self._timer = None
        try:
            self._discover()
            self._timer = node.create_timer(discovery_period_s, self._discover)
        except BaseException:
            self.close()
            raise

    @property
    def path(self) -> Path:
        return self._writer.path

    @property
    def recorded_topics(self) -> list[str]:
        """Topics subscribed so far."""
        return list(self._subscriptions)

    @property
    def skipped_topics(self) -> dict[str, str]:
        """Topics that cannot be recorded, with the reason."""
        return dict(self._skipped)

    @property
    def message_counts(self) -> dict[str, int]:
        """Messages recorded so far per topic."""
        with self._lock:
            return self._writer.message_counts

    @property
    def total_messages(self) -> int:
        return sum(self.message_counts.values())

    def close(self) -> BagInfo:
        """Stop recording, close the bag (metadata complete) and return its summary."""
        with self._lock:
            if self._timer is not None:
                self._node.destroy_timer(self._timer)
                self._timer = None
            for subscription, _, _ in self._subscriptions.values():
                self._node.destroy_subscription(subscription)
            self._subscriptions.clear()
            return self._writer.close()

    # -- internals -------------------------------------------------------------------------

    def _on_message(self, topic: str, data: bytes) -> None:
        if self._on_message_hook is not None:
            self._on_message_hook(topic, data)
        stamp_ns = self._clock.now().nanoseconds
        with self._lock:
            if self._writer.is_open:
                self._writer.write(topic, stamp_ns, data)

    def _skip(self, topic: str, reason: str) -> None:
        self._skipped[topic] = reason
        self._node.get_logger().warning(f'not recording {topic}: {reason}')

    def _discover(self) -> None:
        if not self._writer.is_open:
            return
        graph = dict(self._node.get_topic_names_and_types())
        if self._requested is None:
            candidates = [t for t in graph if t not in self._exclude and not _is_hidden(t)
                          and self._node.count_publishers(t) > 0]
        else:
            candidates = [t for t in self._requested if t not in self._exclude]
        for topic in candidates:
            if topic in self._skipped:
                continue
            if topic in self._subscriptions:
                self._relax_if_needed(topic)
                continue
            types = graph.get(topic, [])
            if len(types) > 1:
                self._skip(topic, f'published with several types {types}')
                continue
            msgtype = types[0] if types else CONTRACT_TOPICS.get(topic)
            if msgtype is not None:
                self._subscribe(topic, msgtype)

    def _offered(self, topic: str) -> list[QoSProfile]:
        return [info.qos_profile for info in self._node.get_publishers_info_by_topic(topic)]

    def _subscribe(self, topic: str, msgtype: str) -> None:
        try:
            msg_class = message_class(msgtype)
        except UnknownMessageTypeError as exc:
            self._skip(topic, str(exc))
            return
        offered = self._offered(topic)
        qos = self._qos_overrides.get(topic) or recording_qos(topic, offered)
        with self._lock:
            try:
                # Without publishers yet, the contract profile is what they will offer.
                self._writer.add_topic(
                    topic, msgtype, [to_bag_qos(p) for p in offered or [qos_for_topic(topic)]])
            except BagError as exc:
                self._skip(topic, str(exc))
                return
            subscription = self._node.create_subscription(
                msg_class, topic, functools.partial(self._on_message, topic), qos, raw=True)
            self._subscriptions[topic] = (subscription, qos, msg_class)
        self._node.get_logger().info(
            f'recording {topic} [{msgtype}] ({qos.reliability.name.lower()}, '
            f'{qos.durability.name.lower()})')

    def _relax_if_needed(self, topic: str) -> None:
        if topic in self._qos_overrides:
            return  # the caller knows what its publishers offer
        subscription, current, msg_class = self._subscriptions[topic]
        offered = self._offered(topic)
        wanted = recording_qos(topic, offered)
        too_strict = (
            (current.reliability == ReliabilityPolicy.RELIABLE
             and wanted.reliability == ReliabilityPolicy.BEST_EFFORT)
            or (current.durability == DurabilityPolicy.TRANSIENT_LOCAL
                and wanted.durability == DurabilityPolicy.VOLATILE))
        if not offered or not too_strict:
            return
        with self._lock:
            self._node.destroy_subscription(subscription)
            replacement = self._node.create_subscription(
                msg_class, topic, functools.partial(self._on_message, topic),
                wanted, raw=True)
            self._subscriptions[topic] = (replacement, wanted, msg_class)
        self._node.get_logger().info(
            f'{topic}: a publisher offers {wanted.reliability.name.lower()}/'
            f'{wanted.durability.name.lower()}; re-subscribed to match it')


def format_summary(info: BagInfo) -> str:
    """Human summary of a closed bag: totals, then messages per topic."""
    lines = [f'bag {info.path} ({info.storage}, {len(info.files)} file(s)): '
             f'{info.message_count} messages over {info.duration_ns / 1e9:.3f} s']
    width = max((len(name) for name in info.topics), default=0)
    for name in sorted(info.topics):
        topic = info.topics[name]
        lines.append(f'  {name:<{width}}  {topic.message_count:>8}  {topic.msgtype}')
    return '\n'.join(lines)


def _drain(executor: SingleThreadedExecutor, recorder: BagRecorder) -> None:
    """Take what DDS already delivered, so a stop does not lose acknowledged messages."""
    deadline = time.monotonic() + DRAIN_LIMIT_S
    quiet_rounds = 0
    previous = recorder.total_messages
    while quiet_rounds < 3 and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.01)
        current = recorder.total_messages
        quiet_rounds = quiet_rounds + 1 if current == previous else 0
        previous = current


def split_ros_args(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """(CLI arguments, ROS arguments): ROS arguments run from ``--ros-args`` to ``--``.

    rclpy's ``remove_ros_args`` would also take the CLI's own ``FROM:=TO`` values (the
    deprecated remap syntax) and apply them to every node, hence the explicit split.
    """
    argv = list(argv)
    if '--ros-args' not in argv:
        return argv, []
    start = argv.index('--ros-args')
    rest = argv[start:]
    if '--' in rest:
        end = rest.index('--')
        return argv[:start] + rest[end + 1:], rest[:end]
    return argv[:start], rest


def _record_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='robotaxi record',
        description='Record topics into a rosbag2 bag until SIGINT/SIGTERM.')
    parser.add_argument('out', help='bag folder to create (must not exist)')
    parser.add_argument('--topics', nargs='+', metavar='TOPIC',
                        help='topics to record (default: the contract topics)')
    parser.add_argument('--all', action='store_true', dest='record_all',
                        help='record every published topic (except --exclude)')
    parser.add_argument('--exclude', nargs='+', metavar='TOPIC', default=[],
                        help=f'never record these (always excluded: {EXCLUDED_BY_DEFAULT})')
    parser.add_argument('--storage', choices=sorted(STORAGE_SUFFIXES), default='mcap')
    parser.add_argument('--split-size-mb', type=float, metavar='MB',
                        help='start a new file after this many megabytes (10^6 bytes)')
    parser.add_argument('--split-duration-s', type=float, metavar='S',
                        help='start a new file after this many seconds of bag time')
    parser.add_argument('--use-sim-time', action='store_true',
                        help='stamp messages with /clock time')
    return parser


def main_record(argv: Sequence[str] | None = None) -> int:
    """``robotaxi record OUT [--topics ...|--all] [--storage ...] [--split-...]``; ROS args ok.

    Returns the process exit status (0 ok, 2 bad arguments).
    """
    cli_args, ros_args = split_ros_args(sys.argv[1:] if argv is None else argv)
    args = _record_parser().parse_args(cli_args)
    if Path(args.out).exists():
        print(f'robotaxi record: {args.out} exists already; choose a new bag folder',
              file=sys.stderr)
        return 2
    split_size_bytes = None
    if args.split_size_mb is not None:
        if not (math.isfinite(args.split_size_mb) and args.split_size_mb * 1e6 >= 1):
            print(f'robotaxi record: --split-size-mb {args.split_size_mb}: must be a positive '
                  'size of at least one byte', file=sys.stderr)
            return 2
        split_size_bytes = round(args.split_size_mb * 1e6)
    stop = threading.Event()
    rclpy.init(args=['robotaxi-record', *ros_args],
               signal_handler_options=SignalHandlerOptions.NO)
    previous_handlers = {sig: signal.signal(sig, lambda *_: stop.set())
                         for sig in (signal.SIGINT, signal.SIGTERM)}
    node = None
    try:
        overrides = [Parameter('use_sim_time', value=True)] if args.use_sim_time else []
        node = rclpy.create_node('robotaxi_recorder', parameter_overrides=overrides)
        try:
            recorder = BagRecorder(
                node, args.out, args.topics, args.storage, split_size_bytes,
                args.split_duration_s, record_all=args.record_all,
                exclude=(*EXCLUDED_BY_DEFAULT, *args.exclude))
        except (BagError, ValueError) as exc:
            print(f'robotaxi record: {exc}', file=sys.stderr)
            return 2
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        what = 'all topics' if args.record_all else f'{len(recorder.recorded_topics)} topics'
        print(f'recording {what} to {args.out} (Ctrl-C to stop)', flush=True)
        try:
            while not stop.is_set():
                executor.spin_once(timeout_sec=0.1)
            _drain(executor, recorder)
        finally:
            info = recorder.close()
            executor.shutdown()
        print(format_summary(info), flush=True)
        return 0
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
        for sig, handler in previous_handlers.items():
            signal.signal(sig, handler)


if __name__ == '__main__':
    sys.exit(main_record())
