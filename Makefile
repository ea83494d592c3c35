# The two commands of README.md, and their helpers.
.PHONY: demo down demo-fail-node demo-canary demo-check console-screenshot test bench fuzz chaos soak protos build

build:
	scripts/deps
	swift build

test:
	scripts/test

demo:
	scripts/demo up

down:
	scripts/demo down

demo-fail-node:
	scripts/demo fail-node

# A canary release of the demo's sample app: apply, pause after the canary, promote, done; with the times.
demo-canary:
	scripts/demo canary

# The demo under a name of its own, checked end to end, then removed (the test suite runs it too).
demo-check:
	scripts/demo check

# The running demo's console in headless Chromium, checked against sigmactl, as .sigma/console.png.
console-screenshot:
	scripts/demo screenshot

bench:
	scripts/bench

# A million seeded hostile requests to each control-plane service (FUZZ_COUNT, FUZZ_SEED to change).
fuzz:
	scripts/fuzz

# Every service killed in turn during a deploy of 200 instances on 3 test hosts (the suite runs it with 50).
chaos:
	SIGMA_CHAOS_INSTANCES=$${SIGMA_CHAOS_INSTANCES:-200} scripts/test --filter ChaosTests

# The model test long: 2,000 seeded operations on 3 test hosts, or 60 minutes, whichever comes first (the suite
# runs 100); SIGMA_MODEL_SEED repeats a run.
soak:
	SIGMA_MODEL_STEPS=$${SIGMA_MODEL_STEPS:-2000} SIGMA_MODEL_MINUTES=$${SIGMA_MODEL_MINUTES:-60} scripts/test --filter ModelTests

protos:
	scripts/generate-protos
