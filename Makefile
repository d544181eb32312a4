# Quick start:  make demo   |   make test
# Both set everything up (apt packages, .venv with ROS 2 Jazzy wheels, msg build, this package)
# and are idempotent: each step re-runs only when its inputs changed.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
ROBOT ?= agilex
APT_PACKAGES := cmake g++ libegl1 libegl-mesa0 libgl1-mesa-dri libgles2 libusb-1.0-0
# the web viewer's browser test; ip and tc for the two-host (network namespace) tests
TEST_APT_PACKAGES := chromium iproute2
export MUJOCO_GL ?= egl

SOURCES := $(shell find wam_ros config urdf launch models -type f -not -name '*.pyc' 2>/dev/null) setup.py package.xml
MSGS := $(wildcard msg/*.msg srv/*.srv cmake/*.cmake) CMakeLists.txt

# LeRobot's own code for the interoperability tests (Python >= 3.12: python3.12 or pyenv's)
LEROBOT_VENV := .venv-lerobot
PYTHON312 ?= $(shell for p in $$(command -v python3.12 python3.13) $$(ls -d $$(pyenv root 2>/dev/null || echo $$HOME/.pyenv)/versions/3.1[2-9]*/bin/python 2>/dev/null); do \
  $$p -c 'import sys; assert sys.version_info >= (3, 12)' 2>/dev/null && echo $$p && break; done)

.PHONY: setup lerobot browser demo test lint format bench urdf clean
setup: $(VENV)/.installed

lerobot: $(LEROBOT_VENV)/.installed

browser: $(VENV)/.test-apt

$(VENV)/.test-apt: | $(VENV)/.apt
	@missing=$$(for p in $(TEST_APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing apt packages for the tests: $$missing"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $$missing; \
	fi
	@touch $@

$(LEROBOT_VENV)/.installed: requirements/lerobot.txt
	@[ -n "$(PYTHON312)" ] || { echo "make lerobot: needs Python >= 3.12 (python3.12, or PYTHON312=/path/to/python)"; exit 1; }
	[ -x $(LEROBOT_VENV)/bin/python ] || $(PYTHON312) -m venv $(LEROBOT_VENV)
	$(LEROBOT_VENV)/bin/python -m pip install -q -r requirements/lerobot.txt
	touch $@

$(VENV)/.apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing apt packages: $$missing"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $$missing; \
	fi
	@mkdir -p $(VENV) && touch $@

$(VENV)/.deps: requirements/venv.txt requirements/venv-nodeps.txt | $(VENV)/.apt
	[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements/venv.txt
	@# packages whose declared dependencies would downgrade numpy / pinocchio (see the file)
	$(PY) -m pip install -q --no-deps -r requirements/venv-nodeps.txt
	touch $@

# Messages: rosidl via CMake into the venv prefix (see ENVIRONMENT notes for the include fix-up).
$(VENV)/.msgs: $(MSGS) $(VENV)/.deps
	rm -rf build/msgs && mkdir -p build/msgs
	cd build/msgs && cmake ../.. -DWAM_ROS_INSTALL_PYTHON=OFF -DBUILD_TESTING=OFF \
	  -DCMAKE_PREFIX_PATH=$(CURDIR)/$(VENV) -DCMAKE_INSTALL_PREFIX=$(CURDIR)/$(VENV) \
	  -DPython3_EXECUTABLE=$(CURDIR)/$(PY) > cmake.log && $(MAKE) -j2 install > build.log
	@# rosidl registers a wam_ros egg-info; pip would uninstall the messages with it
	rm -rf $(VENV)/lib/python3*/site-packages/wam_ros-*.egg-info
	touch $@

# tf2_msgs/TFMessage for state_publisher_node (/tf in `wam-ros bringup`): no wheel exists
$(VENV)/.tf2_msgs: $(wildcard interfaces/tf2_msgs/*.xml interfaces/tf2_msgs/*.txt interfaces/tf2_msgs/msg/*.msg cmake/*.cmake) $(VENV)/.deps
	rm -rf build/tf2_msgs && mkdir -p build/tf2_msgs
	cd build/tf2_msgs && cmake ../../interfaces/tf2_msgs -DBUILD_TESTING=OFF \
	  -DCMAKE_PREFIX_PATH=$(CURDIR)/$(VENV) -DCMAKE_INSTALL_PREFIX=$(CURDIR)/$(VENV) \
	  -DPython3_EXECUTABLE=$(CURDIR)/$(PY) > cmake.log && $(MAKE) -j2 install > build.log
	touch $@

$(VENV)/.installed: $(SOURCES) $(VENV)/.msgs $(VENV)/.tf2_msgs
	@# messages and package share site-packages/wam_ros: reinstall this package after every msg build
	$(PY) -m pip install -q --no-deps --no-build-isolation .
	rm -rf build/lib build/bdist*
	touch $@

# make demo: the shipped policy; make demo TRAIN=1: record and train it here first (about an hour)
demo: setup
	$(VENV)/bin/wam-ros demo --robot $(ROBOT) --out out/demo $(if $(TRAIN),--train)

test: setup lerobot browser
	$(VENV)/bin/pytest -q test --durations=30

# what test/test_style.py checks; `make format` rewrites the tree the way the check wants it
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: setup
	$(VENV)/bin/wam-ros bench sim --robot $(ROBOT)

urdf: setup
	$(VENV)/bin/wam-ros urdf --out urdf

clean:
	rm -rf $(VENV) $(LEROBOT_VENV) build out *.egg-info
