"""Plays a rosbag2 bag back onto ROS 2 topics: `BagPlayer` and the ``robotaxi replay`` CLI.

Messages are published as the recorded CDR bytes (no deserialisation) with the recorded spacing
divided by ``rate``; ``rate=0`` publishes as fast as possible. With ``publish_clock`` the player
publishes rosgraph_msgs/Clock with the bag time it has reached, ~100 Hz of wall time while timed
(and, as fast as possible, every 10 ms of bag time), so nodes with ``use_sim_time`` run on bag
time; a /clock recorded in the bag is then not replayed. Looping replays from the start offset
again, so bag time jumps back (as ``ros2 bag play --loop``).

QoS: contract topics use their contract profile (`common.qos`: reliable except sensor data, the
command deadline, transient local ride state); other topics the first recorded offered profile,
else reliable. Volatile topics get a deep keep-last history (`PLAYBACK_DEPTH`, sensor data
`SENSOR_PLAYBACK_DEPTH`) so fast playback does not overwrite unsent messages; transient-local
topics keep their depth, so late joiners receive only the latest state.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import rclpy
from rclpy.duration import Duration
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from rosgraph_msgs.msg import Clock

from ..common.qos import TOPIC_QOS, clock_qos, objects_qos, qos_for_topic
from .bag_io import BagError, BagReader, read_bag_info
from .recorder import from_bag_qos, message_class, split_ros_args
from .typestore import UnknownMessageTypeError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from rclpy.node import Node
    from rclpy.publisher import Publisher
    from rosbags.interfaces import Qos

CLOCK_TOPIC = '/clock'
CLOCK_RATE_HZ = 100.0
PLAYBACK_DEPTH = 1000
SENSOR_PLAYBACK_DEPTH = 100
ACK_WAIT_S = 2.0


class PlaybackError(ValueError):
    """Invalid playback settings or a bag with nothing playable."""


@dataclass
class PlaybackResult:
    """What a `BagPlayer.play` published: messages per (output) topic, clock messages, passes."""

    published_counts: dict[str, int] = field(default_factory=dict)
    clock_messages: int = 0
    passes: int = 0
    wall_time_s: float = 0.0
    stopped: bool = False

    @property
    def total_messages(self) -> int:
        return sum(self.published_counts.values())


def playback_qos(topic: str, recorded: Sequence[Qos] = ()) -> QoSProfile:
    """Publisher QoS for replaying `topic` (see the module docstring)."""
    if topic in TOPIC_QOS:
        base = qos_for_topic(topic)
    elif recorded:
        base = from_bag_qos(recorded[0])
    else:
        base = objects_qos()
    if base.durability == DurabilityPolicy.TRANSIENT_LOCAL:
        return base
    floor = (SENSOR_PLAYBACK_DEPTH if base.reliability == ReliabilityPolicy.BEST_EFFORT
             else PLAYBACK_DEPTH)
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=max(base.depth, floor),
                      reliability=base.reliability, durability=base.durability,
                      deadline=base.deadline, lifespan=base.lifespan,
                      liveliness=base.liveliness,
                      liveliness_lease_duration=base.liveliness_lease_duration)


def parse_remaps(items: Iterable[str]) -> dict[str, str]:
    """``['/a:=/b', ...]`` -> ``{'/a': '/b'}``.

    Raises:
        PlaybackError: an item is not ``FROM:=TO`` with absolute names.

    """
    remaps = {}
    for item in items:
        source, sep, target = item.partition(':=')
        if not sep or not source.startswith('/') or not target.startswith('/'):
            raise PlaybackError(f'remap {item!r}: must be /from/topic:=/to/topic')
        remaps[source] = target
    return remaps


def _finite_at_least(name: str, value: float, low: float, *, strict: bool) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(
        value) and (value > low if strict else value >= low)
    if not ok:
        relation = '>' if strict else '>='
        raise PlaybackError(f'{name} = {value!r}: must be a finite number {relation} {low}')
    return float(value)


class BagPlayer:
    """Publishes a bag's messages on `node`.

    Publishers are created in the constructor, so subscribers can match before `play`
    (`wait_for_subscribers`). `play` blocks; `start` runs it in a thread (`stop`, `join`).
    Publishing needs no spinning.

    Args:
        node: node that owns the publishers.
        bag_path: bag folder (or a single .mcap/.db3 file).
        rate: playback speed factor; 0 publishes as fast as possible.
        start_offset_s: skip this much bag time from the bag start.
        loop: play again from the start offset when the end is reached, until `stop`.
        remaps: bag topic -> published topic.
        publish_clock: publish /clock (rosgraph_msgs/Clock) from bag time.
        topics: play only these bag topics (None: all).
        clock_rate_hz: /clock rate while timed.

    Raises:
        PlaybackError: invalid settings, unknown topics, nothing playable.
        BagError: the bag cannot be read.

    """

    def __init__(self, node: Node, bag_path: str | Path, rate: float = 1.0,
                 start_offset_s: float = 0.0, loop: bool = False,
                 remaps: Mapping[str, str] | None = None, publish_clock: bool = True,
                 topics: Iterable[str] | None = None, *,
                 clock_rate_hz: float = CLOCK_RATE_HZ) -> None:
        self._rate = _finite_at_least('rate', rate, 0.0, strict=False)
        offset_s = _finite_at_least('start_offset_s', start_offset_s, 0.0, strict=False)
        clock_period_s = 1.0 / _finite_at_least('clock_rate_hz', clock_rate_hz, 0.0,
                                                strict=True)
        self._clock_period_ns = max(1, round(clock_period_s * 1e9))
        self._node = node
        self._loop = bool(loop)
        self.path = Path(bag_path)
        self.info = read_bag_info(self.path)
        remaps = dict(remaps or {})
        if isinstance(topics, str):
            raise PlaybackError(f'topics = {topics!r}: must be a list of topic names')
        wanted = list(self.info.topics) if topics is None else list(dict.fromkeys(topics))
        unknown = sorted(set(wanted).union(remaps) - set(self.info.topics) - {CLOCK_TOPIC})
        if unknown:
            raise PlaybackError(f'topics {unknown} are not in bag {self.path} '
                                f'(it has {sorted(self.info.topics)})')
        offset_ns = round(offset_s * 1e9)
        if self.info.message_count and offset_ns > self.info.duration_ns:
            raise PlaybackError(
                f'start_offset_s = {offset_s}: beyond the bag duration '
                f'{self.info.duration_ns / 1e9:.3f} s')
        self._start_ns = self.info.start_ns + offset_ns
        if publish_clock:
            # The generated clock replaces a recorded one; two clocks would fight.
            wanted = [t for t in wanted if t != CLOCK_TOPIC]
        self._publishers: dict[str, Publisher] = {}
        self._output_topic: dict[str, str] = {}
        for topic in wanted:
            meta = self.info.topics[topic]
            try:
                msg_class = message_class(meta.msgtype)
            except UnknownMessageTypeError as exc:
                node.get_logger().warning(f'not playing {topic}: {exc}')
                continue
            output = remaps.get(topic, topic)
            self._publishers[topic] = node.create_publisher(
                msg_class, output, playback_qos(topic, meta.offered_qos_profiles))
            self._output_topic[topic] = output
        if not self._publishers:
            self._destroy_publishers()
            raise PlaybackError(f'nothing to play in {self.path}: no topic with a known type '
                                f'among {wanted}')
        self._clock_publisher = (node.create_publisher(
            Clock, remaps.get(CLOCK_TOPIC, CLOCK_TOPIC), clock_qos()) if publish_clock else None)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._result: PlaybackResult | None = None
        self._error: BaseException | None = None

    @property
    def topics(self) -> dict[str, str]:
        """Bag topic -> published topic of everything this player publishes."""
        return dict(self._output_topic)

    def wait_for_subscribers(self, timeout_s: float = 5.0, min_count: int = 1) -> bool:
        """Wait until every publisher has `min_count` matched subscriptions; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            if all(p.get_subscription_count() >= min_count
                   for p in self._publishers.values()):
                return True
            if time.monotonic() >= deadline or self._stop.wait(0.01):
                return False

    def wait_for_acked(self, timeout_s: float = ACK_WAIT_S) -> bool:
        """Wait until reliable subscribers acknowledged everything published; False on timeout."""
        timeout = Duration(nanoseconds=round(timeout_s * 1e9))
        return all(p.wait_for_all_acked(timeout) for p in self._publishers.values())

    def play(self) -> PlaybackResult:
        """Publish the bag (repeatedly with `loop`) until its end or `stop`; blocking."""
        result = PlaybackResult(published_counts=dict.fromkeys(self._output_topic.values(), 0))
        wall_start = time.monotonic()
        with BagReader(self.path) as reader:
            while not self._stop.is_set():
                published = self._play_pass(reader, result)
                result.passes += 1
                if not self._loop or published == 0:
                    break
        result.stopped = self._stop.is_set()
        result.wall_time_s = time.monotonic() - wall_start
        return result

    def start(self) -> None:
        """Run `play` in a background thread."""
        if self._thread is not None:
            raise PlaybackError('this player was already started')
        self._thread = threading.Thread(target=self._run, name='bag_player', daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout_s: float | None = None) -> PlaybackResult | None:
        """Wait for a `start`ed playback; its result, or None if still running at the timeout.

        Raises:
            BaseException: whatever ended the playback thread with an error.

        """
        if self._thread is None:
            raise PlaybackError('this player was not started')
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            return None
        if self._error is not None:
            raise self._error
        return self._result

    def destroy(self) -> None:
        """Stop and remove the publishers from the node."""
        self.stop()
        if self._thread is not None:
            self._thread.join()
        self._destroy_publishers()
        if self._clock_publisher is not None:
            self._node.destroy_publisher(self._clock_publisher)
            self._clock_publisher = None

    # -- internals -------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._result = self.play()
        except BaseException as exc:  # handed to join()
            self._error = exc

    def _destroy_publishers(self) -> None:
        for publisher in self._publishers.values():
            self._node.destroy_publisher(publisher)
        self._publishers.clear()

    def _publish_clock(self, bag_ns: int, result: PlaybackResult) -> None:
        assert self._clock_publisher is not None
        message = Clock()
        message.clock.sec, message.clock.nanosec = divmod(bag_ns, 1_000_000_000)
        self._clock_publisher.publish(message)
        result.clock_messages += 1

    def _play_pass(self, reader: BagReader, result: PlaybackResult) -> int:
        timed = self._rate > 0.0
        clock = self._clock_publisher is not None
        wall_origin_ns = time.monotonic_ns()
        next_tick_ns = wall_origin_ns
        last_clock_bag_ns: int | None = None
        published = 0
        for message in reader.messages(self._publishers, start_ns=self._start_ns):
            if self._stop.is_set():
                return published
            if timed:
                due_ns = wall_origin_ns + round((message.timestamp_ns - self._start_ns)
                                                / self._rate)
                while True:
                    now_ns = time.monotonic_ns()
                    if clock and next_tick_ns <= min(now_ns, due_ns):
                        bag_now_ns = self._start_ns + round((now_ns - wall_origin_ns)
                                                            * self._rate)
                        self._publish_clock(min(bag_now_ns, message.timestamp_ns), result)
                        # Skip missed ticks instead of bursting to catch up.
                        next_tick_ns = max(next_tick_ns + self._clock_period_ns, now_ns)
                        continue
                    if now_ns >= due_ns:
                        break
                    wake_ns = min(due_ns, next_tick_ns) if clock else due_ns
                    if self._stop.wait((wake_ns - now_ns) / 1e9):
                        return published
            else:
                if clock and (last_clock_bag_ns is None or message.timestamp_ns
                              - last_clock_bag_ns >= self._clock_period_ns):
                    self._publish_clock(message.timestamp_ns, result)
                    last_clock_bag_ns = message.timestamp_ns
            self._publishers[message.topic].publish(message.data)
            result.published_counts[self._output_topic[message.topic]] += 1
            published += 1
        return published


def _replay_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='robotaxi replay',
                                     description='Play a rosbag2 bag onto ROS 2 topics.')
    parser.add_argument('bag', help='bag folder (or a .mcap/.db3 file)')
    parser.add_argument('--rate', type=float, default=1.0,
                        help='speed factor (default 1.0; 0 = as fast as possible)')
    parser.add_argument('--no-timing', action='store_true',
                        help='publish as fast as possible (same as --rate 0)')
    parser.add_argument('--start-offset', type=float, default=0.0, metavar='S',
                        help='skip the first S seconds of the bag')
    parser.add_argument('--loop', action='store_true', help='repeat until stopped')
    parser.add_argument('--remap', nargs='+', default=[], metavar='FROM:=TO',
                        help='publish bag topic FROM as TO')
    parser.add_argument('--clock', action='store_true',
                        help=f'publish /clock from bag time ({CLOCK_RATE_HZ:g} Hz)')
    parser.add_argument('--topics', nargs='+', metavar='TOPIC', help='play only these topics')
    parser.add_argument('--wait-for-subscribers', type=float, default=0.0, metavar='S',
                        help='wait up to S seconds for a subscriber on every played topic')
    return parser


def main_replay(argv: Sequence[str] | None = None) -> int:
    """``robotaxi replay BAG [--rate R] [--start-offset S] [--loop] [--remap a:=b] [--clock]``.

    Returns the process exit status (0 ok, 2 bad arguments or bag).
    """
    cli_args, ros_args = split_ros_args(sys.argv[1:] if argv is None else argv)
    args = _replay_parser().parse_args(cli_args)
    rclpy.init(args=['robotaxi-replay', *ros_args],
               signal_handler_options=SignalHandlerOptions.NO)
    node = None
    player = None
    previous_handlers = {}
    try:
        node = rclpy.create_node('robotaxi_player')
        try:
            player = BagPlayer(node, args.bag, rate=0.0 if args.no_timing else args.rate,
                               start_offset_s=args.start_offset, loop=args.loop,
                               remaps=parse_remaps(args.remap), publish_clock=args.clock,
                               topics=args.topics)
        except (BagError, ValueError) as exc:
            print(f'robotaxi replay: {exc}', file=sys.stderr)
            return 2
        previous_handlers = {sig: signal.signal(sig, lambda *_: player.stop())
                             for sig in (signal.SIGINT, signal.SIGTERM)}
        if args.wait_for_subscribers > 0 and not player.wait_for_subscribers(
                args.wait_for_subscribers):
            print('robotaxi replay: not every topic has a subscriber; playing anyway',
                  file=sys.stderr)
        print(f'playing {args.bag}: {len(player.topics)} topics, '
              f'{player.info.message_count} messages', flush=True)
        result = player.play()
        player.wait_for_acked()
        for topic in sorted(result.published_counts):
            print(f'  {topic}  {result.published_counts[topic]}')
        print(f'published {result.total_messages} messages in {result.wall_time_s:.3f} s'
              f'{" (stopped)" if result.stopped else ""}', flush=True)
        return 0
    finally:
        for sig, handler in previous_handlers.items():
            signal.signal(sig, handler)
        if player is not None:
            player.destroy()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()


if __name__ == '__main__':
    sys.exit(main_replay())
