"""The mpc_planner node's parameters: its own plus those of the planner, behavior and MPC
cores, flattened into one validated dataclass (ROS 2 parameters are flat names)."""

from __future__ import annotations

import dataclasses

from robotaxi_stack.common.params import param
from robotaxi_stack.planning.behavior import BehaviorParams
from robotaxi_stack.planning.mpc import MpcParams
from robotaxi_stack.planning.planner import PlannerParams


@dataclasses.dataclass(frozen=True, kw_only=True)
class _NodeOnly:
    vehicle: str = param('bmw_320i', description='config/vehicle/<vehicle>.yaml')
    scenario: str = param('', description='plan on this scenario map when map_file is empty')
    map_file: str = param('', description='Lanelet2 .osm map (wins over scenario)')
    map_origin_lat: float = param(35.0, min=-90.0, max=90.0)
    map_origin_lon: float = param(139.0, min=-180.0, max=180.0)
    perception: str = param('lidar_camera', choices=('lidar_camera', 'ground_truth'),
                            description='objects from /prediction/objects (every graph mode: '
                            'prediction runs on ground truth too), or sim ground truth at '
                            'constant velocity (planner alone)')
    plan_period_s: float = param(0.1, min=0.02, max=1.0, description='MPC cycle')
    input_delay_s: float = param(0.0, min=0.0, max=0.5,
                                 description='apply inputs this long after their stamp '
                                             '(reproducible lock-step runs)')
    sync_vehicle_status: bool = param(False, description='handle each odometry message once '
                                      'the vehicle status of its stamp is in (lock-stepped '
                                      'simulation: the same steering every run)')
    reliable_inputs: bool = param(False, description='subscribe odometry/status reliable '
                                  '(the scenario runner\'s reliable simulator topics)')
    max_object_age_s: float = param(0.5, min=0.05, max=5.0,
                                    description='older objects raise a diagnostic')


_PARTS = (_NodeOnly, PlannerParams, BehaviorParams, MpcParams)


def _combined() -> type:
    fields, seen = [], {}
    for part in _PARTS:
        for field in dataclasses.fields(part):
            if field.name in seen:
                raise TypeError(f'parameter {field.name!r} is in {seen[field.name]} and '
                                f'{part.__name__}')
            seen[field.name] = part.__name__
            fields.append((field.name, field.type, dataclasses.field(
                default=field.default, metadata=field.metadata)))
    cls = dataclasses.make_dataclass('PlannerNodeParams', fields, frozen=True, kw_only=True)
    cls.__module__ = __name__  # type hints (strings) resolve in this module
    return cls


PlannerNodeParams = _combined()


def split_params(params) -> tuple[PlannerParams, BehaviorParams, MpcParams]:
    """The core parameter dataclasses out of the flat node parameters."""
    def part(cls):
        return cls(**{f.name: getattr(params, f.name) for f in dataclasses.fields(cls)})
    return part(PlannerParams), part(BehaviorParams), part(MpcParams)
