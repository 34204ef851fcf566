# Sourced by the Makefile: activates .venv and, once built, the colcon install space.
# The wheels install the ROS 2 prefix into the venv itself, so AMENT/CMAKE prefix paths point there.
_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$_root/.venv/bin/activate"
export AMENT_PREFIX_PATH="$_root/.venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export CMAKE_PREFIX_PATH="$_root/.venv${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
# Huge pages for large allocations: filling a 48 MB PointCloud2 otherwise costs ~12k page
# faults (0.8 GB/s instead of 2.9 GB/s, bench/pointcloud_conversion.py).
export GLIBC_TUNABLES="${GLIBC_TUNABLES:-glibc.malloc.hugetlb=1}"
if [ -f "$_root/install/setup.bash" ]; then
  # colcon's setup script warns about the venv prefix having no local_setup file: harmless.
  source "$_root/install/setup.bash" 2>/dev/null
  # `robotaxi` (and the *_node executables) live in lib/robotaxi_stack, where ros2 run looks.
  export PATH="$_root/install/robotaxi_stack/lib/robotaxi_stack:$PATH"
fi
unset _root
