"""Start the robotaxi_stack graph described in config/stack.yaml.

    ros2 launch robotaxi_stack robotaxi.launch.py sim:=true vehicle:=bmw_320i \
        params_file:=/path/overrides.param.yaml log_level:=info use_sim_time:=true

The node list, parameter files, remaps and respawn policy come from stack.yaml through
robotaxi_stack.bringup.graph, the same resolution `robotaxi bringup` uses, so both starters run
an identical graph. Launch arguments are resolved in an OpaqueFunction because they select
which nodes exist (sim, perception).
"""

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from robotaxi_stack.bringup.graph import (LAUNCH_ARGUMENTS, load_graph, parse_bool,
                                          resolve_arguments, resolve_graph)

PACKAGE = 'robotaxi_stack'


def _node_actions(context, *args, **kwargs):
    share = get_package_share_directory(PACKAGE)
    values = {name: LaunchConfiguration(name).perform(context) for name in LAUNCH_ARGUMENTS}
    resolved = resolve_arguments(values)
    use_sim_time = parse_bool('use_sim_time', resolved['use_sim_time'])
    specs = resolve_graph(load_graph(f'{share}/config/stack.yaml'), resolved, f'{share}/config')
    actions = []
    for spec in specs:
        parameters = list(spec.param_files) + [{'use_sim_time': use_sim_time}]
        if spec.parameters:
            parameters.append(dict(spec.parameters))
        actions.append(Node(
            package=PACKAGE, executable=spec.executable, name=spec.name,
            parameters=parameters, remappings=list(spec.remaps),
            respawn=spec.respawn, respawn_delay=spec.respawn_delay_s,
            ros_arguments=['--log-level', resolved['log_level']],
            output='screen', emulate_tty=True))
    return actions


def generate_launch_description():
    arguments = [DeclareLaunchArgument(name, default_value=default, description=description)
                 for name, (default, description) in LAUNCH_ARGUMENTS.items()]
    return LaunchDescription(arguments + [OpaqueFunction(function=_node_actions)])
