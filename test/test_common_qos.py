"""QoS profiles of the topic contract."""

import pytest
from rclpy.qos import DurabilityPolicy, ReliabilityPolicy

from robotaxi_stack.common import qos
from robotaxi_stack.common.topics import CONTRACT_TOPICS


def test_every_contract_topic_has_a_profile():
    assert set(qos.TOPIC_QOS) == set(CONTRACT_TOPICS)


def test_profiles_follow_the_contract():
    assert qos.qos_for_topic('/sensing/lidar/points').reliability == ReliabilityPolicy.BEST_EFFORT
    assert qos.qos_for_topic('/sensing/lidar/points').depth == 5
    command = qos.qos_for_topic('/control/command')
    assert command.reliability == ReliabilityPolicy.RELIABLE and command.depth == 1
    assert command.deadline.nanoseconds == 100_000_000
    ride = qos.qos_for_topic('/planning/mission_status')
    assert ride.durability == DurabilityPolicy.TRANSIENT_LOCAL
    assert qos.qos_for_topic('/not/in/contract').reliability == ReliabilityPolicy.RELIABLE


def test_command_deadline_must_be_positive():
    with pytest.raises(ValueError):
        qos.command_qos(0.0)
