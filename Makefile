# The two commands of README.md, and their helpers.
.PHONY: demo down test bench protos build

build:
	scripts/deps
	swift build

test:
	scripts/test

demo:
	scripts/demo up

down:
	scripts/demo down

bench:
	scripts/bench

protos:
	scripts/generate-protos
