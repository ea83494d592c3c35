# The two commands of README.md, and their helpers.
.PHONY: demo down demo-fail-node demo-check test bench protos build

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

# The demo under a name of its own, checked end to end, then removed (the test suite runs it too).
demo-check:
	scripts/demo check

bench:
	scripts/bench

protos:
	scripts/generate-protos
