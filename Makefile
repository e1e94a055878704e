# Entry points: `make test` (ASan+UBSan build + every test) and `make demo`.
SHELL := /bin/bash
DEPS := libuv1-dev libssl-dev libwslay-dev libjansson-dev libsqlite3-dev libpq-dev \
        libinih-dev libargon2-dev libcmocka-dev pkg-config cmake make gcc clang \
        libclang-rt-14-dev curl wget openssl python3 ca-certificates chromium \
        postgresql
JOBS ?= $(shell nproc)

.PHONY: test demo deps node-deps build-test build-release fuzz clean format deb deb-deps \
        test-package

deps:
	@./scripts/install-deps.sh $(DEPS)

# Independent clients for the tests (Node's ws; playwright-core driving Debian's
# Chromium for the console), pinned by package-lock.json. playwright-core downloads
# no browser.
node-deps:
	@command -v npm >/dev/null || ./scripts/install-deps.sh nodejs npm
	@[ -d tests/node/node_modules/https-proxy-agent ] || npm ci --prefix tests/node --no-audit --no-fund
	@[ -d tests/browser/node_modules/playwright-core ] || \
	  npm ci --prefix tests/browser --no-audit --no-fund

build-test: deps node-deps deb-deps
	cmake -S . -B build/test -DCMAKE_BUILD_TYPE=Debug -DPHY_SANITIZE=ON >/dev/null
	cmake --build build/test -j $(JOBS)

test: build-test
	cd build/test && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --output-on-failure -j 2

build-release: deps
	cmake -S . -B build/release -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build build/release -j $(JOBS) --target phyhub phyproxy phyagent phyctl

demo: build-release
	./scripts/demo.sh

# Debian packages phystack-{hub,proxy,agent,ctl} into build/deb/ (debian/, debhelper),
# checked by lintian (errors fail); docs/operations.md.
DEB_DEPS := debhelper dpkg-dev fakeroot lintian
deb-deps: deps
	@./scripts/install-deps.sh $(DEB_DEPS)

deb: deb-deps
	./scripts/build-deb.sh

# Builds the packages, installs them into this machine (root), runs the provisioning
# flow with the packaged binaries and configuration, and removes them again.
test-package: deb-deps
	python3 tests/package/test_package.py

fuzz: deps
	CC=clang cmake -S . -B build/fuzz -DPHY_FUZZ=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
	cmake --build build/fuzz -j $(JOBS)
	@set -e; for f in build/fuzz/fuzz_*; do \
	  n=$$(basename $$f); mkdir -p build/fuzz/corpus-$$n; \
	  echo "== $$n (60 s)"; \
	  $$f -max_total_time=60 -print_final_stats=1 build/fuzz/corpus-$$n tests/fuzz/corpus/$$n; \
	done

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build
