# Everyday commands. `make test` is what CI runs (plus fmt and clippy).
.PHONY: run cluster test lint fmt ci

run:        ## a single-node cluster with in-memory storage (the embedded default)
	cargo run --release

cluster:    ## a local 3-node cluster on loopback
	scripts/local-cluster.sh 3

test:       ## the whole test suite
	cargo test

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings

ci:
	bash .ci/run
