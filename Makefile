# switchboard: `make run` starts the gateway, `make test` installs what is missing, builds and tests.
.PHONY: deps build test test-release test-asan test-tsan test-fuzz bench run install format format-check clean

JOBS ?= 2

deps:
	@bash scripts/install-deps.sh

build: deps
	cmake --preset release >/dev/null
	cmake --build --preset release -j $(JOBS)

test-release: build
	ctest --preset release -j $(JOBS)

# Sanitizer runs cover everything: the logic modules and the gateway, its server and shutdown.
test-asan: deps
	cmake --preset debug >/dev/null
	cmake --build --preset debug -j $(JOBS)
	ctest --preset debug -j $(JOBS)

test-tsan: deps
	cmake --preset tsan >/dev/null
	cmake --build --preset tsan -j $(JOBS)
	setarch $$(uname -m) -R ctest --preset tsan -j $(JOBS)

# libFuzzer targets (clang, ASan + UBSan), each for SWITCHBOARD_FUZZ_SECONDS from its seeds.
test-fuzz: deps
	cmake --preset fuzz >/dev/null
	cmake --build --preset fuzz -j $(JOBS)
	ctest --preset fuzz -j $(JOBS)

test: format-check test-release test-asan test-tsan test-fuzz

bench: build
	./build/switchboard_bench

run: build
	./build/switchboard serve --config examples/switchboard.yaml

# The binary, the example configuration and the systemd unit under PREFIX (DESTDIR for staging):
#   sudo make install PREFIX=/usr/local
PREFIX ?= /usr/local
install: build
	DESTDIR=$(DESTDIR) cmake --install build --prefix $(PREFIX)

format:
	clang-format -i $$(git ls-files '*.cpp' '*.h')

# Fails on any file that `make format` would change.
format-check: deps
	clang-format --dry-run --Werror $$(git ls-files '*.cpp' '*.h')

clean:
	rm -rf build build-debug build-tsan build-fuzz
