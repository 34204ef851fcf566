# robotaxi_stack: `make demo` runs the default ride scenario, `make test` builds and tests.
SHELL := /bin/bash
VENV := .venv
ROS_ENV := source tools/ros_env.sh
SCENARIO ?= scenarios/plain_ride.yaml
DEMO_OUT ?= out/demo

.PHONY: demo test setup setup-tools setup-gpu build bench clean lint

demo: build
	rm -rf $(DEMO_OUT)  # the demo's own output folder: a rerun replaces it (bags are never overwritten)
	$(ROS_ENV) && robotaxi scenario run $(SCENARIO) --out $(DEMO_OUT)

setup:
	tools/setup_env.sh

# Training tools (tools/train_*.py): torch CPU + onnx exporter in .venv-tools, which sees .venv's
# packages through a .pth file. Not needed by the stack, the tests or CI.
setup-tools: setup
	[ -x .venv-tools/bin/python ] || python3 -m venv .venv-tools
	.venv-tools/bin/pip install --quiet --disable-pip-version-check -r requirements/tools.txt \
	    numpy -c requirements/constraints.txt
	echo "$(CURDIR)/$(VENV)/lib/python3.11/site-packages" \
	    > .venv-tools/lib/python3.11/site-packages/zz_project_venv.pth

# GPU vehicles and benchmarks: onnxruntime-gpu (CUDA/TensorRT providers) replaces the CPU wheel;
# the two must never be installed together (they share the onnxruntime module).
ORT_GPU_VERSION ?= 1.31.1
setup-gpu: setup
	$(VENV)/bin/pip uninstall --yes onnxruntime
	$(VENV)/bin/pip install --disable-pip-version-check onnxruntime-gpu==$(ORT_GPU_VERSION)

build: setup
	$(ROS_ENV) && colcon --log-level error build --base-paths . interfaces \
	    --event-handlers console_cohesion- status- summary+ \
	    --cmake-args -DBUILD_TESTING=OFF -Wno-dev

test: build
	$(ROS_ENV) && colcon --log-level error test --packages-select robotaxi_stack \
	    --event-handlers console_direct+ status- summary+ \
	    --pytest-args -p no:cacheprovider --timeout=900 \
	  ; rc=$$?; $(ROS_ENV) && colcon test-result --verbose --test-result-base build/robotaxi_stack \
	  && exit $$rc

bench: build
	$(ROS_ENV) && for b in bench/*.py; do echo "== $$b"; python $$b $(BENCH_ARGS) || exit 1; done

clean:
	rm -rf build install log out
