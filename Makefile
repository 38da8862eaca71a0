# The two commands of the README:
#   make demo   - set up (first time) and run `fieldhub demo`
#   make test   - set up (first time), lint, type-check, check the import layers and run the whole test suite
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
# Pure domain code, held to mypy --strict.
DOMAIN := devices/payloads.py devices/bounds.py devices/topics.py devices/errors.py devices/broker.py devices/clock.py hub/ingest/live.py \
          geo sim/city.py sim/traffic.py hub/domain \
          drone/modes.py drone/state.py drone/telemetry.py drone/signing.py drone/mission.py drone/errors.py drone/codec.py \
          drone/clock.py drone/params.py drone/streams.py \
          sim/copter.py sim/arducopter.py sim/manoeuvre.py sim/stations.py \
          video/frames.py video/bitstream.py video/segments.py sim/framecode.py hub/signals.py \
          devices/fields.py hub/video/ports.py sim/gps.py sim/failsafes.py sim/auto_mission.py sim/mav_vehicle.py \
          bench/drone_kinematics.py bench/drones_report.py drone/listeners.py hub/incidents/claims.py hub/incidents/ports.py \
          gb28181 jt808 sim/gb28181_bodies.py sim/gb28181_camera.py sim/gb28181_fleet.py sim/gb28181_media.py \
          sim/gb28181_stream.py sim/gb28181_subscription.py sim/gb28181_ua.py sim/gb28181_demo.py sim/gb28181_officer.py \
          hub/gateways/commands.py hub/gateways/gb28181/gateway.py hub/gateways/gb28181/queries.py \
          hub/gateways/errors.py hub/gateways/readings.py hub/gateways/credentials.py hub/gateways/owntracks hub/gateways/osmand \
          hub/gateways/submit.py hub/gateways/jt808 hub/gateways/tak/cot.py hub/gateways/phones.py \
          sim/jt808_terminal.py sim/jt808_demo.py sim/officer_demo.py sim/phone_demo.py sim/owntracks_phone.py \
          sim/traccar_phone.py sim/tak_client.py

.PHONY: setup setup-test demo test lint bench-ingest

setup:
	@scripts/setup.sh

demo: setup
	$(BIN)/fieldhub demo

setup-test:
	@scripts/setup.sh test

lint: setup-test
	$(BIN)/ruff check .
	$(BIN)/mypy --strict $(DOMAIN)
	$(BIN)/mypy devices geo hub drone sim bench video gb28181 jt808 fieldhub
	$(BIN)/lint-imports  # the layer contracts of pyproject.toml [tool.importlinter]
	$(BIN)/python scripts/house_rules.py  # no reads of other objects' private attributes; modules <= 400 lines

test: lint
	$(BIN)/python -m pytest -q -p no:cacheprovider --basetemp=$(CURDIR)/.pytest-tmp

bench-ingest: setup
	$(BIN)/fieldhub bench ingest
