"""Planning message conversions: objects from PredictedObjects follow their likeliest path."""

import math

import numpy as np
from geometry_msgs.msg import Pose

from robotaxi_msgs.msg import ObjectClass, PredictedObject, PredictedObjects, PredictedPath
from robotaxi_stack.planning import conversions as conv


def _predicted(x_m, path_x_m, step_s=0.5, confidence=1.0, nan=False):
    msg = PredictedObjects()
    obj = PredictedObject(object_id=3)
    obj.classification.append(ObjectClass(label=ObjectClass.CAR, probability=1.0))
    obj.pose.pose.position.x = math.nan if nan else x_m
    obj.pose.pose.orientation.w = 1.0
    obj.twist.twist.linear.x = 2.0
    obj.dimensions.x, obj.dimensions.y = 4.5, 1.8
    path = PredictedPath(confidence=confidence)
    path.time_step.nanosec = int(step_s * 1e9)
    for x in path_x_m:
        pose = Pose()
        pose.position.x = x
        path.path.append(pose)
    obj.paths.append(path)
    msg.objects.append(obj)
    return msg


def test_predicted_objects_follow_their_path_advanced_by_the_message_age():
    msg = _predicted(10.0, [11.0, 12.0, 13.0, 14.0])  # at 0.5, 1.0, ... s
    objects, dropped = conv.objects_from_predicted(msg, 0.5, np.array([0.0, 0.5, 1.0]))
    assert dropped == 0 and list(objects.ids) == [3] and list(objects.labels) == [1]
    assert objects.velocity_mps[0].tolist() == [2.0, 0.0]
    assert objects.pred_xy_m[0, :, 0].tolist() == [11.0, 12.0, 13.0]
    assert objects.xy_m[0].tolist() == [11.0, 0.0]


def test_non_finite_predicted_object_is_dropped_and_counted():
    objects, dropped = conv.objects_from_predicted(_predicted(0.0, [0.0], nan=True), 0.0,
                                                   np.array([0.0, 0.5]))
    assert dropped == 1 and len(objects) == 0
