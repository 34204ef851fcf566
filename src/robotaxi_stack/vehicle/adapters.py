"""Drive-by-wire adapters: where a gated command leaves the stack (pure interface, no rclpy).

The vehicle interface node gates every command (command_gate.py) and hands the result to one
adapter. An adapter turns a `GatedCommand` into whatever the actuators understand: the default
`TopicAdapter` (in vehicle_interface_node.py, because it needs rclpy) publishes
robotaxi_msgs/ControlCommand on ~/output/command for the simulator or an external DBW bridge; a
CAN adapter (python-can + cantools, encoding the command into the vehicle's DBC frames) plugs in
by subclassing `DriveByWireAdapter` and adding its name to `ADAPTER_NAMES`.

Contract for every adapter:
- `send` is called from the node's single executor thread, once per output stamp, in stamp
  order; it must not block longer than a control period (20 ms) - queue or drop instead.
- A failure to deliver raises `AdapterError` (never anything else); the node reports it as an
  ERROR diagnostic and keeps running, since the next command may get through.
- `close` releases the device (bus, socket); it is called once, at shutdown.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # command_gate imports ADAPTER_NAMES from here; avoid the import cycle
    from robotaxi_stack.vehicle.command_gate import GatedCommand

ADAPTER_NAMES = ('topic',)
"""Values the `adapter` parameter accepts; each maps to one DriveByWireAdapter subclass."""


class AdapterError(RuntimeError):
    """A drive-by-wire adapter could not deliver a command (bus off, socket closed...)."""


class DriveByWireAdapter(abc.ABC):
    """Sink of gated commands. Subclasses set `name` (one of ADAPTER_NAMES) and `send`."""

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """Short adapter name, as given in the `adapter` parameter."""

    @abc.abstractmethod
    def send(self, command: GatedCommand) -> None:
        """Deliver one command to the actuators; raise AdapterError when that fails.

        `command.stamp_ns` is the stamp of the control command it answers (or the MRM tick
        time); angles are front-wheel angles in rad (left positive), speeds and accelerations
        are signed along base_link x.
        """

    def close(self) -> None:
        """Release the device. The default has nothing to release."""
