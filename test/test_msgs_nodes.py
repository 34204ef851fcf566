"""robotaxi_msgs really works: two rclpy nodes exchange messages and call a service."""

import time

import rclpy
from geometry_msgs.msg import Pose
from rclpy.executors import SingleThreadedExecutor

from robotaxi_msgs.msg import (ControlCommand, DetectedObject, DetectedObjects, MrmState,
                               ObjectClass, RideRequest)
from robotaxi_msgs.srv import SetRide
from robotaxi_stack.common.qos import command_qos, objects_qos


def spin_until(executor, predicate, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.02)
    return predicate()


def test_two_nodes_exchange_messages_and_a_service_call():
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        talker = rclpy.create_node('talker', context=context)
        listener = rclpy.create_node('listener', context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(talker)
        executor.add_node(listener)
        objects, commands = [], []
        listener.create_subscription(DetectedObjects, '/perception/objects', objects.append,
                                     objects_qos())
        listener.create_subscription(ControlCommand, '/control/command', commands.append,
                                     command_qos())
        rides = {}

        def set_ride(request, response):
            if request.ride.ride_id in rides:
                response.accepted, response.reason = False, 'duplicate id'
            else:
                rides[request.ride.ride_id] = request.ride
                response.accepted = True
            return response

        listener.create_service(SetRide, '/planning/set_ride', set_ride)
        objects_pub = talker.create_publisher(DetectedObjects, '/perception/objects',
                                              objects_qos())
        command_pub = talker.create_publisher(ControlCommand, '/control/command', command_qos())
        assert spin_until(executor, lambda: objects_pub.get_subscription_count() == 1
                          and command_pub.get_subscription_count() == 1)

        msg = DetectedObjects()
        msg.header.frame_id = 'map'
        msg.header.stamp.sec = 12
        obj = DetectedObject(existence_probability=0.9)
        obj.classification.append(ObjectClass(label=ObjectClass.PEDESTRIAN, probability=0.8))
        obj.dimensions.x, obj.dimensions.y, obj.dimensions.z = 0.6, 0.6, 1.7
        msg.objects.append(obj)
        objects_pub.publish(msg)
        command_pub.publish(ControlCommand(steering_angle_rad=0.1, acceleration_mps2=-0.5))
        assert spin_until(executor, lambda: objects and commands)
        assert objects[0].header.stamp.sec == 12
        assert objects[0].objects[0].classification[0].label == ObjectClass.PEDESTRIAN
        assert abs(commands[0].steering_angle_rad - 0.1) < 1e-6

        client = talker.create_client(SetRide, '/planning/set_ride')
        assert client.wait_for_service(timeout_sec=5.0)
        ride = RideRequest(ride_id='r1', pickup=Pose(), dropoff=Pose())
        ride.pickup.position.x = 180.0
        first = client.call_async(SetRide.Request(ride=ride))
        assert spin_until(executor, first.done)
        second = client.call_async(SetRide.Request(ride=ride))
        assert spin_until(executor, second.done)
        assert first.result().accepted and rides['r1'].pickup.position.x == 180.0
        assert not second.result().accepted and second.result().reason == 'duplicate id'
        assert MrmState.EMERGENCY_STOP == 2
    finally:
        rclpy.shutdown(context=context)
