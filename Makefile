# pulsewire: `make demo` runs the main job, `make test` runs the tests. Both set everything up.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
SYSTEM_PACKAGES := mosquitto mosquitto-clients gcc gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm valgrind libsodium-dev \
	postgresql chromium chromium-driver rabbitmq-server

# The MIT-BIH copy beside the project when present; otherwise the loader downloads it with wfdb.
MITDB_DIR ?= $(shell [ -d ../shared/data/mitdb ] && realpath ../shared/data/mitdb)
PULSEWIRE_CACHE ?= $(CURDIR)/.cache/pulsewire
export MITDB_DIR PULSEWIRE_CACHE

ifeq ($(QUICK),1)
BENCH_ARGS := --seeds 0 1 2 --epochs 6 --out out/bench-quick --json bench/results/foundation-quick.json
EDGE_BENCH_ARGS := --model out/bench-quick/models/inter_seed0_int8.tflite --json bench/results/edge-quick.json \
	--records 100 108 203 208 232 --latency-seconds 30
ROBUSTNESS_ARGS := --model out/bench-quick/models/inter_seed0_int8.tflite --json bench/results/robustness-quick.json \
	--records 100 203 232
FED_BENCH_ARGS := --seeds 0 1 2 --rounds 3 --out out/bench-quick-federated --json bench/results/federated-quick.json \
	--centralized bench/results/foundation-quick.json
PRIV_BENCH_ARGS := --quick --seeds 0 --out out/bench-quick-privacy
OPT_BENCH_ARGS := --bench --quick --out out/bench-quick-optimize --json bench/results/optimize-quick.json \
	--foundation bench/results/foundation-quick.json
FIRMWARE_BENCH_ARGS := --model out/bench-quick/models/inter_seed0_int8.tflite --beats 2000 --json bench/results/firmware-quick.json \
	--variants out/bench-quick-optimize/models/inter_seed0_*_int8.tflite
SERVER_BENCH_ARGS := --devices 200 --seconds 30 --json bench/results/server-quick.json
SCALE_BENCH_ARGS := --quick --json bench/results/scale-quick.json
TASKS_BENCH_ARGS := --quick --out out/bench-quick-tasks --json bench/results/tasks-quick.json
AGG_BENCH_ARGS := --devices 500 --repeats 3 --json bench/results/aggregator-quick.json
FEDBUFF_BENCH_ARGS := --quick --json bench/results/fedbuff-quick.json
else
BENCH_ARGS := --seeds 0 1 2 --epochs 60 --out out/bench --json bench/results/foundation.json
EDGE_BENCH_ARGS := --model out/bench/models/inter_seed0_int8.tflite --json bench/results/edge.json
ROBUSTNESS_ARGS := --model out/bench/models/inter_seed0_int8.tflite --json bench/results/robustness.json
FED_BENCH_ARGS := --seeds 0 1 2 --rounds 20 --out out/bench-federated --json bench/results/federated.json \
	--centralized bench/results/foundation.json
PRIV_BENCH_ARGS := --jobs 2 --out bench/results
OPT_BENCH_ARGS := --bench --intra-epochs 12 --out out/bench-optimize --json bench/results/optimize.json \
	--foundation bench/results/foundation.json
FIRMWARE_BENCH_ARGS := --model out/bench/models/inter_seed0_int8.tflite --json bench/results/firmware.json \
	--variants out/bench-optimize/models/inter_seed0_*_int8.tflite
SERVER_BENCH_ARGS := --devices 1000 --seconds 300 --json bench/results/server.json
SCALE_BENCH_ARGS := --json bench/results/scale.json
TASKS_BENCH_ARGS := --seeds 0 1 2 --out out/bench-tasks --json bench/results/tasks.json
AGG_BENCH_ARGS := --devices 2000 --repeats 3 --json bench/results/aggregator.json
FEDBUFF_BENCH_ARGS := --json bench/results/fedbuff.json
endif

.PHONY: help setup system-deps demo test bench clean

help:
	@echo "make demo   - set up, federated training over MQTT (a broker, the aggregator, one device per DS1 patient),"
	@echo "              int8 export, DS2 evaluation -> out/demo/fleet_fedavg_int8.html; the fleet server records it"
	@echo "              and DS2 alerts with ECG strips -> out/demo/fleet.db, out/demo/dashboard/index.html"
	@echo "make test   - set up and run the test suite"
	@echo "make bench  - centralized (3 seeds x 2 protocols) then federated (strategies, encodings, reference setting)"
	@echo "              then privacy and robustness (epsilon sweep, secure aggregation over MQTT, attacks x defences)"
	@echo "              then the edge pipeline (R peaks vs peers on 48 records, speed, alert latency)"
	@echo "              then its robustness (detection and classes under 23 perturbations and on the second channel)"
	@echo "              then model optimization (distillation, pruning, QAT: 10 variants x 3 seeds x 2 protocols)"
	@echo "              then the firmware (generated C vs TFLite-Micro on the host and a Cortex-M4 under QEMU, flash/RAM)"
	@echo "              then the fleet server's ingest (1,000 simulated devices for 5 minutes: alerts lost, p99 latency, RSS)"
	@echo "              then scale (10,000 simulated devices on one Mosquitto for 10 min: connections, alerts lost, rounds)"
	@echo "              and FedBuff vs synchronous FedAvg (wall time to the same val F1, 30 % slow devices)"
	@echo "              -> bench/results/{foundation,federated,privacy,edge,robustness,optimize,firmware,server,scale,fedbuff}.json"
	@echo "              (QUICK=1: a few epochs, rounds, records)"

$(STAMP): pyproject.toml
	@echo "==> creating $(VENV) and installing pulsewire[train,edge,dev,server] (TensorFlow is ~600 MB; 1-2 min)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/pip install -q --disable-pip-version-check -e '.[train,edge,dev,server]'
	rm -f $(VENV)/.installed-* && touch $@

system-deps:
	@bash tools/install_system_deps.sh $(SYSTEM_PACKAGES)

setup: $(STAMP) system-deps

# The demo's ward: DS2 records replayed through edge devices whose alerts (with ECG strips) reach the server.
DEMO_FLEET := ward
DEMO_RECORDS := 200 203 233

demo: setup
	@rm -rf out/demo/fleet.db* out/demo/server out/demo/dashboard out/demo/edge && mkdir -p out/demo/server
	@set -euo pipefail; \
	port() { $(BIN)/python -c 'from broker.launcher import free_port; print(free_port())'; }; \
	MQTT_PORT=$$(port); WEB_PORT=$$(port); BROKER=mqtt://127.0.0.1:$$MQTT_PORT; DB=out/demo/fleet.db; \
	SERVER_PID=; $(BIN)/pulsewire broker --port $$MQTT_PORT > out/demo/server/broker.log 2>&1 & BROKER_PID=$$!; \
	trap 'kill $$SERVER_PID $$BROKER_PID 2>/dev/null || true' EXIT; \
	echo "==> the fleet server: accounts, consent of the ward's patients, ingest from $$BROKER"; \
	head -c 18 /dev/urandom | base64 > out/demo/server/password && chmod 600 out/demo/server/password; \
	for role in clinician engineer; do \
		$(BIN)/pulsewire server user add $$role --role $$role --password-file out/demo/server/password --db $$DB; done; \
	for r in $(DEMO_RECORDS); do \
		$(BIN)/pulsewire server consent pt$$r --fleet $(DEMO_FLEET) --training yes --strip yes --db $$DB; done; \
	$(BIN)/pulsewire server --db $$DB --broker $$BROKER --fleet $(DEMO_FLEET) --all-fleets \
		--listen 127.0.0.1:$$WEB_PORT > out/demo/server/server.log 2>&1 & SERVER_PID=$$!; \
	echo "==> federated training over MQTT (the server records every round): http://127.0.0.1:$$WEB_PORT"; \
	$(BIN)/pulsewire fleet --seeds 0 1 2 --rounds 20 --encoding int8 --chunk-size 4096 --deadline 60 \
		--broker $$BROKER --out out/demo; \
	echo "==> DS2 records $(DEMO_RECORDS) through edge devices running the seed-0 model: alerts with ECG strips"; \
	MITDB=$${MITDB_DIR:-$(PULSEWIRE_CACHE)/mitdb}; \
	for r in $(DEMO_RECORDS); do \
		$(BIN)/pulsewire edge run --record $$MITDB/$$r --model out/demo/models/fedavg_int8_seed0_int8.tflite \
			--broker $$BROKER --fleet $(DEMO_FLEET) --device ecg$$r --device-id $$r --patient pt$$r --strips \
			--speed max --out out/demo/edge > out/demo/edge-$$r.json; done; \
	sleep 2; kill $$SERVER_PID; wait $$SERVER_PID || true; SERVER_PID=; \
	$(BIN)/pulsewire server snapshot --db $$DB --out out/demo/dashboard
	@echo "==> the seed-0 model as C for a Cortex-M4: bit-exactness on the host and under QEMU, flash and RAM"
	$(BIN)/pulsewire firmware bench --model out/demo/models/fedavg_int8_seed0_int8.tflite --qemu-beats 500 \
		--json out/demo/firmware.json
	@echo "==> open out/demo/fleet_fedavg_int8.html (federation), out/demo/dashboard/index.html (server snapshot)"
	@echo "    and out/demo/firmware.md (microcontroller); the dashboard live on the demo's database:"
	@echo "    $(BIN)/pulsewire server --db out/demo/fleet.db --fleet $(DEMO_FLEET)   (accounts clinician, engineer;"
	@echo "    password in out/demo/server/password)"

test: setup
	$(BIN)/python -m pytest -q tests

bench: setup
	$(BIN)/pulsewire foundation --protocols inter intra $(BENCH_ARGS)
	$(BIN)/pulsewire fleet-bench $(FED_BENCH_ARGS)
	$(BIN)/pulsewire privacy-bench $(PRIV_BENCH_ARGS)
	$(BIN)/pulsewire dp-noise-bench --json bench/results/dp-noise.json
	$(BIN)/pip install -q --disable-pip-version-check -e '.[bench]'
	$(BIN)/pulsewire edge bench $(EDGE_BENCH_ARGS)
	$(BIN)/pulsewire edge robustness $(ROBUSTNESS_ARGS)
	$(BIN)/pulsewire export $(OPT_BENCH_ARGS)
	$(BIN)/pulsewire firmware bench $(FIRMWARE_BENCH_ARGS)
	$(BIN)/pulsewire server bench $(SERVER_BENCH_ARGS)
	nice -n 10 $(BIN)/pulsewire scale-bench $(SCALE_BENCH_ARGS)
	$(BIN)/pulsewire tasks bench $(TASKS_BENCH_ARGS)
	$(BIN)/pulsewire aggregator-bench $(AGG_BENCH_ARGS)
	$(BIN)/pulsewire fedbuff-bench $(FEDBUFF_BENCH_ARGS)

clean:
	rm -rf out .cache .pytest_cache
