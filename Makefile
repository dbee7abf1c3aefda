# Berth's commands. `make dev` and `make test` install whatever they need on a fresh machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help

.PHONY: help dev test fuzz coverage bench crash build cli lint fmt clean

help: ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

dev: ## serve Berth locally on :8787 (own PostgreSQL unless DATABASE_URL is set; Ctrl-C stops)
	@scripts/dev.sh

test: ## every test tier (unit, integration, end-to-end in workerd, fuzzing), deploy dry-run, coverage
	@scripts/test.sh

fuzz: ## schemathesis against a running Worker (BERTH_E2E_URL, default `make dev`'s :8787)
	@BERTH_E2E_URL=$${BERTH_E2E_URL:-http://127.0.0.1:8787} scripts/fuzz.sh

coverage: ## native tests under cargo-llvm-cov: HTML report in coverage/ and the total
	@scripts/coverage.sh

bench: ## workerd + PgBouncer + the load program, with pgbench ceilings in the same run
	@scripts/bench.sh

crash: ## crash campaign: kill workerd 10 times and restart PostgreSQL under load, then verify
	@scripts/crash.sh

build: ## the release Worker bundle (build/index.js + build/index_bg.wasm)
	@scripts/setup.sh && source scripts/env.sh && scripts/build-worker.sh

cli: ## the berth command-line tool, release build: target/release/berth
	cargo build --release -p berth-cli
	@ls -l target/release/berth | awk '{printf "target/release/berth: %.1f MB\n", $$5/1048576}'

lint: ## rustfmt and clippy (host and wasm32), warnings are errors
	cargo fmt --all -- --check
	cargo clippy --all-targets --features e2e -- -D warnings
	cargo clippy -p berth-cli --all-targets -- -D warnings
	cargo clippy --lib --target wasm32-unknown-unknown -- -D warnings

fmt: ## format the code
	cargo fmt --all

clean: ## remove build outputs (keeps the databases in .data)
	rm -rf target build public logs
