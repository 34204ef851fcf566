#!/usr/bin/env bash
# Creates .venv with every pinned dependency and the system packages they need.
# Idempotent: with nothing to do it returns in a second (stamp file beside the venv).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
STAMP="$VENV/.robotaxi-setup-stamp"
APT_PACKAGES=(libusb-1.0-0 mosquitto)
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: apt-get install ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ -f "$STAMP" ] && [ "$STAMP" -nt requirements/requirements.txt ] \
    && [ "$STAMP" -nt requirements/constraints.txt ] && [ "$STAMP" -nt tools/setup_env.sh ]; then
  exit 0
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
  -r requirements/requirements.txt -c requirements/constraints.txt 2>&1 \
  | grep -v "^WARNING: Location .* is ignored" || true
# pip's exit status is lost in the pipe above: verify the install instead.
"$VENV/bin/python" -m pip check >/dev/null 2>&1 || "$VENV/bin/python" -m pip check
"$VENV/bin/python" -c "import rclpy, numpy, casadi, onnxruntime, cv2, lanelet2, rosbags, open3d, vehiclemodels"
"$VENV/bin/python" tools/fix_wheel_cmake_paths.py "$VENV"
touch "$STAMP"
echo "setup: $VENV ready"
