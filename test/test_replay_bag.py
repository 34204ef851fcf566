"""Bag record and replay: bag_io, the type store, BagRecorder/BagPlayer on rclpy, the CLIs."""

import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import rclpy
from builtin_interfaces.msg import Time
from nav_msgs.msg import Odometry
from rclpy.context import Context
from rclpy.duration import Duration
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message, serialize_message
from robotaxi_msgs.msg import ControlCommand, MissionStatus
from rosbags.rosbag2 import Reader as RosbagsReader
from rosbags.rosbag2 import Writer as RosbagsWriter
from rosbags.typesys import Stores, get_typestore as stock_typestore
from sensor_msgs.msg import PointCloud2, PointField

from robotaxi_stack.common.qos import clock_qos, qos_for_topic
from robotaxi_stack.replay import typestore
from robotaxi_stack.replay.bag_io import (
    BagReader, BagReadError, BagWriteError, BagWriter, MessageDecodeError, deserialize,
    read_bag, read_bag_info, serialize)
from robotaxi_stack.replay.player import BagPlayer, PlaybackError, main_replay, parse_remaps
from robotaxi_stack.replay.recorder import BagRecorder, main_record, recording_qos

SRC_DIR = Path(__file__).resolve().parents[1] / 'src'
CONTROL = '/control/command'
ODOM = '/localization/kinematic_state'
POINTS = '/sensing/lidar/points'
MISSION = '/planning/mission_status'
TYPES = {
    CONTROL: 'robotaxi_msgs/msg/ControlCommand',
    ODOM: 'nav_msgs/msg/Odometry',
    POINTS: 'sensor_msgs/msg/PointCloud2',
    MISSION: 'robotaxi_msgs/msg/MissionStatus',
}
CLASSES = {CONTROL: ControlCommand, ODOM: Odometry, POINTS: PointCloud2, MISSION: MissionStatus}


# -- message factories (rclpy classes; serialize_message gives the CDR DDS carries) ----------

def _stamp(stamp_ns):
    return Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)


def make_message(topic, index, rng):
    stamp = _stamp(1_700_000_000_000_000_000 + index * 20_000_000)
    if topic == CONTROL:
        msg = ControlCommand(steering_angle_rad=float(rng.uniform(-0.5, 0.5)),
                             velocity_mps=float(index), acceleration_mps2=0.5)
        msg.header.stamp, msg.header.frame_id = stamp, 'base_link'
    elif topic == ODOM:
        msg = Odometry(child_frame_id='base_link')
        msg.header.stamp, msg.header.frame_id = stamp, 'map'
        msg.pose.pose.position.x = float(index)
        msg.pose.covariance = rng.uniform(0, 1, 36).tolist()
    elif topic == POINTS:
        points_xyzi = rng.normal(size=(64, 4)).astype(np.float32)
        msg = PointCloud2(height=1, width=64, is_bigendian=False, point_step=16,
                          row_step=64 * 16, is_dense=True, data=points_xyzi.tobytes())
        msg.fields = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1)
                      for i, n in enumerate('xyzi')]
        msg.header.stamp, msg.header.frame_id = stamp, 'lidar_top'
    else:
        msg = MissionStatus(ride_id=f'r{index}', state=index % 7, eta_s=float(index))
        msg.header.stamp = stamp
    return msg


def make_stream(topics, count, seed=0, t0_ns=1_000_000_000, period_ns=20_000_000):
    """(topic, msgtype, stamp_ns, cdr) in time order, the topics interleaved."""
    rng = np.random.default_rng(seed)
    stream = []
    for i in range(count):
        for k, topic in enumerate(topics):
            data = serialize_message(make_message(topic, i, rng))
            stream.append((topic, TYPES[topic], t0_ns + i * period_ns + k * 1000, data))
    return stream


def write_stream(path, stream, **kwargs):
    with BagWriter(path, **kwargs) as bag:
        for topic in dict.fromkeys(m[0] for m in stream):
            bag.add_topic(topic, TYPES[topic])
        for topic, _, stamp_ns, data in stream:
            bag.write(topic, stamp_ns, data)
    return bag.info


# -- rclpy fixture ---------------------------------------------------------------------------

@pytest.fixture
def ros():
    context = Context()
    rclpy.init(context=context)
    executor = SingleThreadedExecutor(context=context)
    nodes = []

    def make_node(name, **kwargs):
        node = rclpy.create_node(name, context=context, **kwargs)
        executor.add_node(node)
        nodes.append(node)
        return node

    def spin_until(predicate, timeout_s=5.0):
        deadline = Duration(seconds=timeout_s).nanoseconds + _now_ns()
        while not predicate():
            if _now_ns() > deadline:
                return False
            executor.spin_once(timeout_sec=0.01)
        return True

    yield SimpleNamespace(context=context, executor=executor, node=make_node,
                          spin_until=spin_until)
    executor.shutdown()
    for node in nodes:
        node.destroy_node()
    rclpy.shutdown(context=context)


def _now_ns():
    import time
    return time.monotonic_ns()


def raw_sink(node, topic, msg_class, qos):
    received = []
    node.create_subscription(msg_class, topic, received.append, qos, raw=True)
    return received


def deep_reliable():
    return QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)


def deep_best_effort():
    return QoSProfile(depth=1000, reliability=ReliabilityPolicy.BEST_EFFORT)


# -- type store ------------------------------------------------------------------------------

def test_typestore_hashes_equal_the_rosidl_generated_hashes_of_robotaxi_msgs():
    share = typestore.package_share_dir('robotaxi_msgs')
    if share is None:
        pytest.skip('robotaxi_msgs is not installed (no rosidl type descriptions)')
    import json
    store = typestore.get_typestore()
    checked = 0
    for description in sorted(share.glob('*/*.json')):
        for entry in json.loads(description.read_text())['type_hashes']:
            name = entry['type_name']
            if name.startswith('robotaxi_msgs/') and (
                    '/msg/' in name or name.endswith(('_Request', '_Response'))):
                assert store.hash_rihs01(name) == entry['hash_string'], name
                checked += 1
    assert checked >= 19  # 17 messages + SetRide request and response


def test_typestore_hash_equals_the_hash_the_live_graph_announces(ros):
    node = ros.node('hash_probe')
    for topic, msg_class in ((CONTROL, ControlCommand), (POINTS, PointCloud2)):
        node.create_publisher(msg_class, topic, 1)
        (info,) = node.get_publishers_info_by_topic(topic)
        assert str(info.topic_type_hash) == typestore.message_definition(TYPES[topic])[1]


def test_ensure_types_loads_installed_packages_and_names_unknown_types():
    store = typestore.new_typestore()
    for name in ('nav_msgs/msg/Odometry', 'geometry_msgs/msg/PoseWithCovariance'):
        del store.fielddefs[name]
        del store.types[name]
    typestore.ensure_types(store, ['nav_msgs/msg/Odometry'])
    assert store.hash_rihs01('nav_msgs/msg/Odometry') == stock_typestore(
        Stores.ROS2_KILTED).hash_rihs01('nav_msgs/msg/Odometry')
    with pytest.raises(typestore.UnknownMessageTypeError, match='no_such_pkg'):
        typestore.ensure_types(store, ['no_such_pkg/msg/Thing'])
    with pytest.raises(typestore.UnknownMessageTypeError, match='package/msg/Name'):
        typestore.ensure_types(store, ['Odometry'])


# -- bag_io: writing and reading -------------------------------------------------------------

@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_bag_round_trip_keeps_bytes_order_and_type_metadata(tmp_path, storage):
    stream = make_stream([CONTROL, POINTS, ODOM], 20)
    info = write_stream(tmp_path / 'bag', stream, storage=storage)
    assert info.files == (f'bag_0{".mcap" if storage == "mcap" else ".db3"}',)
    assert [tuple(m) for m in read_bag(tmp_path / 'bag')] == stream
    assert [m.data for m in read_bag(tmp_path / 'bag', topics=[ODOM])] == [
        m[3] for m in stream if m[0] == ODOM]
    # What a third-party rosbag2 reader sees: definitions and RIHS01 hashes per topic.
    with RosbagsReader(tmp_path / 'bag') as reader:
        assert reader.message_count == len(stream)
        for connection in reader.connections:
            definition, type_hash = typestore.message_definition(connection.msgtype)
            assert connection.digest == type_hash
            assert connection.msgdef.data == definition
    bag_info = read_bag_info(tmp_path / 'bag')
    assert bag_info.storage == storage
    assert {t: i.message_count for t, i in bag_info.topics.items()} == {
        CONTROL: 20, POINTS: 20, ODOM: 20}
    assert (bag_info.start_ns, bag_info.end_ns) == (stream[0][2], stream[-1][2])


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_split_by_size_writes_numbered_files_that_read_back_complete(tmp_path, storage):
    stream = make_stream([POINTS, CONTROL], 30)  # ~1.1 kB clouds
    info = write_stream(tmp_path / 'run', stream, storage=storage, split_size_bytes=8000)
    suffix = '.mcap' if storage == 'mcap' else '.db3'
    assert len(info.files) >= 4
    assert list(info.files) == [f'run_{i}{suffix}' for i in range(len(info.files))]
    assert sorted(p.name for p in (tmp_path / 'run').iterdir()) == sorted(
        [*info.files, 'metadata.yaml'])
    with BagReader(tmp_path / 'run') as reader:
        assert reader.info.files == info.files
        assert reader.info.message_count == len(stream)
    assert [tuple(m) for m in read_bag(tmp_path / 'run')] == stream
    for name in info.files:  # every file is a valid storage file on its own
        assert sum(1 for _ in read_bag(tmp_path / 'run' / name)) > 0


def test_split_by_duration_bounds_the_bag_time_of_each_file(tmp_path):
    stream = make_stream([CONTROL], 56, period_ns=100_000_000)  # 5.5 s at 10 Hz
    info = write_stream(tmp_path / 'bag', stream, storage='sqlite3', split_duration_s=1.0)
    assert len(info.files) == 6
    from ruamel.yaml import YAML
    meta = YAML(typ='safe').load((tmp_path / 'bag' / 'metadata.yaml').read_text())
    files = meta['rosbag2_bagfile_information']['files']
    assert [f['message_count'] for f in files] == [10, 10, 10, 10, 10, 6]
    assert all(f['duration']['nanoseconds'] < 1_000_000_000 for f in files)
    assert [tuple(m) for m in read_bag(tmp_path / 'bag')] == stream


def test_files_written_out_of_time_order_read_back_in_time_order(tmp_path):
    stream = make_stream([CONTROL], 40)
    shuffled = [stream[i] for i in np.random.default_rng(3).permutation(len(stream))]
    write_stream(tmp_path / 'bag', shuffled, storage='mcap', split_size_bytes=500)
    assert [tuple(m) for m in read_bag(tmp_path / 'bag')] == stream


def test_an_exception_while_writing_leaves_a_complete_bag(tmp_path):
    stream = make_stream([CONTROL, ODOM], 5)
    with pytest.raises(RuntimeError, match='sensor died'):
        with BagWriter(tmp_path / 'bag', storage='mcap', split_size_bytes=600) as bag:
            bag.add_topic(CONTROL, TYPES[CONTROL])
            bag.add_topic(ODOM, TYPES[ODOM])
            for topic, _, stamp_ns, data in stream:
                bag.write(topic, stamp_ns, data)
            raise RuntimeError('sensor died')
    assert not bag.is_open
    assert [tuple(m) for m in read_bag(tmp_path / 'bag')] == stream
    assert read_bag_info(tmp_path / 'bag').message_count == len(stream)
    assert not (tmp_path / 'bag' / '.staging').exists()


def test_metadata_covers_completed_files_while_the_bag_is_still_open(tmp_path):
    stream = make_stream([CONTROL], 30)
    bag = BagWriter(tmp_path / 'bag', storage='mcap', split_size_bytes=400).open()
    bag.add_topic(CONTROL, TYPES[CONTROL])
    for topic, _, stamp_ns, data in stream:
        bag.write(topic, stamp_ns, data)
    completed = read_bag_info(tmp_path / 'bag')  # as after a hard kill
    assert 0 < completed.message_count < len(stream)
    assert [tuple(m) for m in read_bag(tmp_path / 'bag')] == stream[:completed.message_count]
    bag.close()
    assert read_bag_info(tmp_path / 'bag').message_count == len(stream)


def test_topic_selection_records_only_the_selected_topics(tmp_path):
    stream = make_stream([CONTROL, ODOM], 4)
    with BagWriter(tmp_path / 'bag', topics=[ODOM]) as bag:
        assert bag.add_topic(CONTROL, TYPES[CONTROL]) is False
        assert bag.add_topic(ODOM, TYPES[ODOM]) is True
        written = [bag.write(topic, stamp_ns, data) for topic, _, stamp_ns, data in stream]
    assert written == [False, True] * 4
    assert [m.topic for m in read_bag(tmp_path / 'bag')] == [ODOM] * 4


def test_writer_rejects_invalid_settings_and_writes(tmp_path):
    (tmp_path / 'exists').mkdir()
    with pytest.raises(BagWriteError, match='exists already'):
        BagWriter(tmp_path / 'exists').open()
    with pytest.raises(BagWriteError, match='storage'):
        BagWriter(tmp_path / 'a', storage='rosbag1')
    for bad in (0, -5, 1.5, float('nan'), True):
        with pytest.raises(BagWriteError, match='split_size_bytes'):
            BagWriter(tmp_path / 'a', split_size_bytes=bad)
    for bad in (0.0, float('inf'), float('nan')):
        with pytest.raises(BagWriteError, match='split_duration_s'):
            BagWriter(tmp_path / 'a', split_duration_s=bad)
    bag = BagWriter(tmp_path / 'b').open()
    with pytest.raises(BagWriteError, match='no_pkg/msg/Nothing'):
        bag.add_topic('/x', 'no_pkg/msg/Nothing')
    with pytest.raises(BagWriteError, match='absolute'):
        bag.add_topic('relative', TYPES[CONTROL])
    bag.add_topic(CONTROL, TYPES[CONTROL])
    with pytest.raises(BagWriteError, match='cannot also carry'):
        bag.add_topic(CONTROL, TYPES[ODOM])
    with pytest.raises(BagWriteError, match='add_topic'):
        bag.write(ODOM, 1, b'\x00\x01\x00\x00')
    with pytest.raises(BagWriteError, match='>= 0'):
        bag.write(CONTROL, -1, b'\x00\x01\x00\x00')
    with pytest.raises(BagWriteError, match='integer'):
        bag.write(CONTROL, 1.5, b'\x00\x01\x00\x00')
    with pytest.raises(BagWriteError, match='no CDR message'):
        bag.write(CONTROL, 1, b'')
    bag.close()
    with pytest.raises(BagWriteError, match='closed'):
        bag.write(CONTROL, 1, b'\x00\x01\x00\x00')


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_truncated_bag_file_gives_an_error_naming_the_bag(tmp_path, storage):
    info = write_stream(tmp_path / 'bag', make_stream([POINTS], 30), storage=storage,
                        split_size_bytes=10_000)
    victim = tmp_path / 'bag' / info.files[1]
    victim.write_bytes(victim.read_bytes()[:victim.stat().st_size // 2])
    with pytest.raises(BagReadError, match=str(tmp_path / 'bag')) as caught:
        list(read_bag(tmp_path / 'bag'))
    message = str(caught.value)
    assert info.files[1] in message or 'malformed' in message or 'truncated' in message


def test_unreadable_paths_and_queries_give_clear_errors(tmp_path):
    write_stream(tmp_path / 'bag', make_stream([CONTROL], 10), split_size_bytes=300)
    with pytest.raises(BagReadError, match='no bag at'):
        read_bag(tmp_path / 'missing')
    with pytest.raises(BagReadError, match=r"topics \['/nope'\] are not in bag"):
        read_bag(tmp_path / 'bag', topics=['/nope'])
    (tmp_path / 'bag' / 'bag_1.mcap').unlink()
    with pytest.raises(BagReadError, match='bag_1.mcap'):
        read_bag(tmp_path / 'bag')
    (tmp_path / 'bag' / 'metadata.yaml').unlink()
    with pytest.raises(BagReadError, match='no metadata.yaml'):
        read_bag(tmp_path / 'bag')
    (tmp_path / 'notes.txt').write_text('not a bag')
    with pytest.raises(BagReadError, match='notes.txt'):
        read_bag(tmp_path / 'notes.txt')


def test_storage_holding_fewer_messages_than_the_metadata_is_reported(tmp_path):
    # A damaged file whose reader silently skips records looks like this: the metadata
    # promises more messages than the storage yields.
    write_stream(tmp_path / 'bag', make_stream([POINTS], 10), storage='mcap')
    meta_path = tmp_path / 'bag' / 'metadata.yaml'
    meta_path.write_text(meta_path.read_text().replace('message_count: 10', 'message_count: 12'))
    with pytest.raises(BagReadError, match='read 10 messages where its metadata counts 12'):
        list(read_bag(tmp_path / 'bag'))
    assert len(list(read_bag(tmp_path / 'bag', start_ns=0))) == 10  # filtered reads: no check


def test_deserialize_decodes_recorded_bytes_and_rejects_garbage():
    msg = make_message(CONTROL, 7, np.random.default_rng(0))
    decoded = deserialize(serialize_message(msg), TYPES[CONTROL])
    assert decoded.velocity_mps == 7.0 and decoded.header.frame_id == 'base_link'
    # rclpy keeps float32 fields at double precision until serialised: compare decoded forms.
    assert deserialize_message(serialize(decoded, TYPES[CONTROL]), ControlCommand) == (
        deserialize_message(serialize_message(msg), ControlCommand))
    with pytest.raises(MessageDecodeError, match='ControlCommand'):
        deserialize(b'\x00\x01\x00\x00\x01', TYPES[CONTROL])
    with pytest.raises(typestore.UnknownMessageTypeError):
        deserialize(b'\x00\x01\x00\x00', 'no_pkg/msg/Nothing')


# -- rclpy: recorder and player --------------------------------------------------------------

def test_recording_qos_matches_every_offered_publisher():
    assert recording_qos(POINTS).reliability == ReliabilityPolicy.BEST_EFFORT
    assert recording_qos(CONTROL).reliability == ReliabilityPolicy.RELIABLE
    assert recording_qos(MISSION).durability == DurabilityPolicy.TRANSIENT_LOCAL
    volatile_reliable = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
    best_effort = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
    mixed = recording_qos(CONTROL, [volatile_reliable, best_effort])
    assert mixed.reliability == ReliabilityPolicy.BEST_EFFORT
    assert recording_qos(MISSION, [volatile_reliable]).durability == DurabilityPolicy.VOLATILE
    assert recording_qos(MISSION, [qos_for_topic(MISSION)]).durability == (
        DurabilityPolicy.TRANSIENT_LOCAL)


def test_record_then_replay_delivers_identical_bytes_with_remap(ros, tmp_path):
    topics = [CONTROL, ODOM, POINTS, MISSION]
    source = ros.node('source')
    publishers = {t: source.create_publisher(CLASSES[t], t, qos_for_topic(t)) for t in topics}
    recorder_node = ros.node('recorder')
    recorder = BagRecorder(recorder_node, tmp_path / 'bag', topics, storage='mcap')
    assert ros.spin_until(lambda: all(p.get_subscription_count() >= 1
                                      for p in publishers.values()))
    stream = make_stream(topics, 8, seed=5)
    stamp_before_ns = recorder_node.get_clock().now().nanoseconds
    for topic, _, _, data in stream:
        expected = recorder.message_counts[topic] + 1
        publishers[topic].publish(data)
        assert ros.spin_until(lambda: recorder.message_counts[topic] == expected)
    info = recorder.close()
    assert {t: info.topics[t].message_count for t in topics} == dict.fromkeys(topics, 8)
    recorded = list(read_bag(tmp_path / 'bag'))
    assert [(m.topic, m.msgtype, m.data) for m in recorded] == [
        (t, ty, d) for t, ty, _, d in stream]
    stamps = [m.timestamp_ns for m in recorded]
    assert stamps == sorted(stamps) and stamps[0] >= stamp_before_ns
    source.destroy_node()

    # Play the recording back as fast as possible, /control/command remapped.
    sink = ros.node('sink')
    remapped = '/replay/control/command'
    received = {
        remapped: raw_sink(sink, remapped, ControlCommand, deep_reliable()),
        ODOM: raw_sink(sink, ODOM, Odometry, deep_best_effort()),
        POINTS: raw_sink(sink, POINTS, PointCloud2, deep_best_effort()),
        MISSION: raw_sink(sink, MISSION, MissionStatus, deep_reliable()),
    }
    player = BagPlayer(ros.node('player'), tmp_path / 'bag', rate=0.0,
                       remaps={CONTROL: remapped})
    assert player.wait_for_subscribers(timeout_s=5.0)
    result = player.play()
    assert result.published_counts == {remapped: 8, ODOM: 8, POINTS: 8, MISSION: 8}
    assert ros.spin_until(lambda: all(len(r) == 8 for r in received.values()))
    for topic in topics:
        out = remapped if topic == CONTROL else topic
        assert received[out] == [d for t, _, _, d in stream if t == topic], topic
    assert sink.count_publishers(CONTROL) == 0 and sink.count_publishers(remapped) == 1
    player.destroy()


def test_timed_playback_follows_bag_time_scaled_by_rate_and_publishes_clock(ros, tmp_path):
    stream = make_stream([CONTROL], 11, period_ns=50_000_000)  # 0.5 s of bag time
    write_stream(tmp_path / 'bag', stream)
    sink = ros.node('sink')
    commands = raw_sink(sink, CONTROL, ControlCommand, deep_reliable())
    clocks = []
    from rosgraph_msgs.msg import Clock
    sink.create_subscription(Clock, '/clock', clocks.append,
                             QoSProfile(depth=1000, reliability=clock_qos().reliability))
    player = BagPlayer(ros.node('player'), tmp_path / 'bag', rate=2.0, publish_clock=True)
    assert player.wait_for_subscribers()
    player.start()
    assert ros.spin_until(lambda: player.join(0.0) is not None)
    result = player.join()
    assert ros.spin_until(lambda: len(commands) == 11)
    assert commands == [m[3] for m in stream]
    # The last message is due 0.5 s / 2.0 after the first: playback cannot be faster.
    assert result.wall_time_s >= 0.25 * 0.98
    clock_ns = [c.clock.sec * 1_000_000_000 + c.clock.nanosec for c in clocks]
    assert len(clock_ns) >= 5 and result.clock_messages >= len(clock_ns)
    assert clock_ns == sorted(clock_ns)
    assert clock_ns[0] == stream[0][2] and clock_ns[-1] <= stream[-1][2]
    player.destroy()


def test_start_offset_skips_the_beginning_and_loop_repeats(ros, tmp_path):
    stream = make_stream([CONTROL], 10, period_ns=100_000_000)
    write_stream(tmp_path / 'bag', stream)
    sink = ros.node('sink')
    commands = raw_sink(sink, CONTROL, ControlCommand, deep_reliable())
    player = BagPlayer(ros.node('player'), tmp_path / 'bag', rate=0.0, start_offset_s=0.55,
                       publish_clock=False)
    assert player.wait_for_subscribers()
    assert player.play().published_counts == {CONTROL: 4}
    assert ros.spin_until(lambda: len(commands) == 4)
    assert commands == [m[3] for m in stream[6:]]
    player.destroy()

    # Paced (0.9 s of bag time at 20x: 45 ms a pass) so the subscriber keeps up with the loop.
    looping = BagPlayer(ros.node('looper'), tmp_path / 'bag', rate=20.0, loop=True,
                        publish_clock=False)
    assert looping.wait_for_subscribers()
    commands.clear()
    looping.start()
    assert ros.spin_until(lambda: len(commands) >= 25)
    looping.stop()
    result = looping.join(5.0)
    assert result is not None and result.stopped and result.passes >= 3
    assert commands[:20] == [m[3] for m in stream] * 2
    looping.destroy()


def test_bag_written_with_the_stock_rosbags_typestore_plays_back(ros, tmp_path):
    store = stock_typestore(Stores.ROS2_KILTED)
    types = store.types
    bag_path = tmp_path / 'ros2_bag'
    with RosbagsWriter(bag_path, version=9) as writer:  # sqlite3, as `ros2 bag` can write
        connection = writer.add_connection('/odom_in', 'nav_msgs/msg/Odometry',
                                           typestore=store)
        for i in range(5):
            header = types['std_msgs/msg/Header'](
                stamp=types['builtin_interfaces/msg/Time'](sec=100 + i, nanosec=0),
                frame_id='map')
            pose = types['geometry_msgs/msg/Pose'](
                position=types['geometry_msgs/msg/Point'](x=float(i), y=2.0, z=0.0),
                orientation=types['geometry_msgs/msg/Quaternion'](x=0.0, y=0.0, z=0.0, w=1.0))
            twist = types['geometry_msgs/msg/Twist'](
                linear=types['geometry_msgs/msg/Vector3'](x=1.5, y=0.0, z=0.0),
                angular=types['geometry_msgs/msg/Vector3'](x=0.0, y=0.0, z=0.1))
            odom = types['nav_msgs/msg/Odometry'](
                header=header, child_frame_id='base_link',
                pose=types['geometry_msgs/msg/PoseWithCovariance'](
                    pose=pose, covariance=np.arange(36, dtype=np.float64)),
                twist=types['geometry_msgs/msg/TwistWithCovariance'](
                    twist=twist, covariance=np.zeros(36)))
            writer.write(connection, (100 + i) * 1_000_000_000,
                         store.serialize_cdr(odom, 'nav_msgs/msg/Odometry'))
    sink = ros.node('sink')
    received = []
    sink.create_subscription(Odometry, '/odom_in', received.append, deep_reliable())
    player = BagPlayer(ros.node('player'), bag_path, rate=0.0)
    assert player.wait_for_subscribers()
    assert player.play().published_counts == {'/odom_in': 5}
    assert ros.spin_until(lambda: len(received) == 5)
    assert [m.pose.pose.position.x for m in received] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert received[4].header.stamp.sec == 104 and received[0].child_frame_id == 'base_link'
    assert list(received[0].pose.covariance) == list(range(36))
    player.destroy()


def test_recorder_with_record_all_discovers_topics_that_appear_later(ros, tmp_path):
    from std_msgs.msg import String
    recorder_node = ros.node('recorder')
    recorder = BagRecorder(recorder_node, tmp_path / 'bag', storage='sqlite3',
                           record_all=True, discovery_period_s=0.05)
    talker = ros.node('talker')
    publisher = talker.create_publisher(String, '/test/chatter', 10)
    assert ros.spin_until(lambda: publisher.get_subscription_count() >= 1)
    assert '/test/chatter' in recorder.recorded_topics
    assert '/rosout' not in recorder.recorded_topics
    for text in ('one', 'two'):
        publisher.publish(String(data=text))
    assert ros.spin_until(lambda: recorder.message_counts.get('/test/chatter') == 2)
    recorder.close()
    decoded = [deserialize(m.data, m.msgtype).data
               for m in read_bag(tmp_path / 'bag', topics=['/test/chatter'])]
    assert decoded == ['one', 'two']


def test_player_rejects_invalid_settings(ros, tmp_path):
    write_stream(tmp_path / 'bag', make_stream([CONTROL], 3))
    node = ros.node('player')
    for kwargs, match in (({'rate': -1.0}, 'rate'), ({'rate': float('nan')}, 'rate'),
                          ({'start_offset_s': 5.0}, 'beyond'),
                          ({'topics': ['/nope']}, '/nope'),
                          ({'remaps': {'/nope': '/x'}}, '/nope'),
                          ({'clock_rate_hz': 0.0}, 'clock_rate_hz')):
        with pytest.raises(PlaybackError, match=match):
            BagPlayer(node, tmp_path / 'bag', **kwargs)
    with pytest.raises(BagReadError):
        BagPlayer(node, tmp_path / 'missing')
    assert parse_remaps(['/a:=/b']) == {'/a': '/b'}
    with pytest.raises(PlaybackError, match='from/topic'):
        parse_remaps(['a=b'])


# -- CLIs in their own processes (signals, exit status, summary) -----------------------------

def _cli(module, *args):
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join([str(SRC_DIR), env.get('PYTHONPATH', '')])
    return subprocess.Popen([sys.executable, '-m', module, *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_record_cli_stops_on_sigint_and_leaves_a_complete_bag(ros, tmp_path):
    node = ros.node('cli_source')
    publisher = node.create_publisher(ControlCommand, CONTROL, deep_reliable())
    proc = _cli('robotaxi_stack.replay.recorder', str(tmp_path / 'bag'), '--topics', CONTROL,
                '--storage', 'sqlite3')
    try:
        assert ros.spin_until(lambda: publisher.get_subscription_count() >= 1, 20.0)
        stream = make_stream([CONTROL], 5)
        for _, _, _, data in stream:
            publisher.publish(data)
        assert publisher.wait_for_all_acked(Duration(seconds=5))
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert 'recording 1 topics' in out
    assert f'{CONTROL}' in out and '5 messages' in out
    assert [m.data for m in read_bag(tmp_path / 'bag')] == [m[3] for m in stream]


def test_cli_rejects_a_missing_bag_and_an_existing_output(tmp_path, capsys):
    (tmp_path / 'taken').mkdir()
    assert main_record([str(tmp_path / 'taken')]) == 2
    assert 'exists already' in capsys.readouterr().err
    assert main_replay([str(tmp_path / 'nowhere'), '--no-timing']) == 2
    assert 'no bag at' in capsys.readouterr().err


def test_replay_cli_plays_a_bag_to_a_subscriber(ros, tmp_path):
    stream = make_stream([CONTROL, ODOM], 6)
    write_stream(tmp_path / 'bag', stream, storage='sqlite3')
    sink = ros.node('cli_sink')
    received = raw_sink(sink, '/cli/command', ControlCommand, deep_reliable())
    proc = _cli('robotaxi_stack.replay.player', str(tmp_path / 'bag'), '--no-timing',
                '--topics', CONTROL, '--remap', f'{CONTROL}:=/cli/command',
                '--wait-for-subscribers', '20')
    try:
        assert ros.spin_until(lambda: len(received) == 6, 25.0)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert received == [m[3] for m in stream if m[0] == CONTROL]
    assert 'published 6 messages' in out
