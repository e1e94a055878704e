#!/usr/bin/env bash
# Builds the Debian packages (phystack-hub, -proxy, -agent, -ctl) from this tree with
# debian/ + debhelper, into build/deb/ (or $PHY_DEB_OUT), then runs lintian: any error fails the build.
# The tree is copied first (dpkg-buildpackage writes next to the source folder and
# into debian/), so the work tree stays clean; the copy learns the git description
# through PHY_GIT_DESCRIBE.
set -euo pipefail
cd "$(dirname "$0")/.."
src=$PWD
version=$(sed -n 's/^project(phystack VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
deb_version=$(dpkg-parsechangelog -l debian/changelog -S Version)
if [ "$version" != "$deb_version" ]; then
  echo "debian/changelog is at $deb_version, CMakeLists.txt at $version: add a changelog entry" >&2
  exit 1
fi
out=${PHY_DEB_OUT:-$src/build/deb}
rm -rf "$out"
mkdir -p "$out/src/phystack-$version"
tar -C "$src" --exclude=./build --exclude=./demo --exclude=./.git --exclude=node_modules \
    --exclude=__pycache__ -cf - . | tar -C "$out/src/phystack-$version" -xf -
PHY_GIT_DESCRIBE=$(git -C "$src" describe --always --dirty --tags 2>/dev/null || echo unknown)
export PHY_GIT_DESCRIBE
cd "$out/src/phystack-$version"
echo "== dpkg-buildpackage (log: build/deb/build.log)"
if ! dpkg-buildpackage -b -us -uc -j"$(nproc)" >"$out/build.log" 2>&1; then
  tail -40 "$out/build.log" >&2
  exit 1
fi
cd "$out"
mv src/*.deb src/*.changes src/*.buildinfo . 2>/dev/null || true
ls -1 *.deb
echo "== lintian"
# Tags kept, with the reason, are listed in docs/operations.md.
lintian --fail-on error --no-tag-display-limit phystack_"$version"_*.changes | tee lintian.log
