# The two commands of the README. Both provision libtorch first (idempotent), then build.
.PHONY: demo test setup build lint bench

setup:
	@bash scripts/setup.sh

demo: setup
	@echo "[make demo] building the relief CLI (release)"
	cargo build --release -p relief-cli
	@echo "[make demo] running the demo on the bundled MNIST sample"
	./target/release/relief demo

test: setup
	@echo "[make test] building and running every test of the workspace"
	@bash scripts/test.sh

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

bench: setup
	cargo bench -p relief-benches
