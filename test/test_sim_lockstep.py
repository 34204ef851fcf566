"""simulator_node.StampWait: the lock-step bookkeeping for nodes off the command's path."""

from std_msgs.msg import Header

from robotaxi_msgs.msg import PredictedObjects
from robotaxi_stack.common.stamps import ns_to_stamp
from robotaxi_stack.sim.simulator_node import StampWait


def test_a_reply_counts_once_its_stamp_reaches_the_trigger_sent():
    wait = StampWait('/localization/kinematic_state', '/planning/mission/heartbeat')
    assert wait.arrived()  # nothing sent yet: nothing to wait for
    wait.sent_ns = 40_000_000
    assert not wait.arrived()
    wait.on_reply(Header(stamp=ns_to_stamp(20_000_000)))  # the previous tick's answer
    assert not wait.arrived()
    wait.on_reply(Header(stamp=ns_to_stamp(40_000_000)))
    assert wait.arrived()
    # A late, older reply does not move the newest stamp back.
    wait.on_reply(Header(stamp=ns_to_stamp(0)))
    assert wait.received_ns == 40_000_000 and wait.arrived()


def test_replies_with_a_header_field_are_read_by_their_header_stamp():
    wait = StampWait('/sim/ground_truth/objects', '/prediction/objects', sent_ns=100_000_000)
    msg = PredictedObjects()
    msg.header.stamp = ns_to_stamp(100_000_000)
    wait.on_reply(msg)
    assert wait.arrived()
