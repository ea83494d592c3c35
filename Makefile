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
	scripts/deps
	swift build -c release --product sigma-bench
	mkdir -p bench
	"$$(swift build -c release --show-bin-path)/sigma-bench" rpc --json-out bench/results.json --markdown-out bench/results.md

protos:
	scripts/generate-protos
