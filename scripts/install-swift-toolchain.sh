#!/usr/bin/env bash
# Installs the tools the test suite uses to prove that generated iOS Swift packages compile, without Xcode:
#   Debian trixie's swiftlang (Swift 6: swiftc, SwiftPM with XCTest on Linux, swift-format) inside a
#   `debootstrap --variant=minbase trixie` chroot.
# Everything lands in ${SLMPACK_TOOLCHAINS:-<repo>/.toolchains}/swift/ (2.5 GB; 570 MB download); nothing goes into the
# system. debootstrap itself is used from PATH when it knows trixie, else it is fetched with a private apt state (its
# own sources list and lists dir) and unpacked under swift/debootstrap/. Packages come from the Debian mirror that this
# machine's apt sources already use (SLMPACK_DEBIAN_MIRROR overrides it). The chroot is built under swift/root.tmp,
# checked (swift --version; swift build, swift test and swift format lint of a throwaway package), and only then
# renamed to swift/root; toolchain.env is written last. Re-running is a fast no-op once toolchain.env matches.
# Needs root (debootstrap, chroot) and util-linux `unshare`: every command in the chroot runs in a private mount
# namespace with its own /proc, so no mount outlives it, even when it is killed.
# Usage: bash scripts/install-swift-toolchain.sh
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BASE="${SLMPACK_TOOLCHAINS:-$ROOT/.toolchains}"
mkdir -p "$BASE"
TC="$(cd "$BASE" && pwd)/swift"
ENV_FILE="$TC/toolchain.env"
SWIFT_ROOT="$TC/root"
BUILD_ROOT="$TC/root.tmp"

LAYOUT=1                        # bump when the layout of $TC, the chroot's package set or toolchain.env changes
SUITE=trixie                    # Debian 13: swiftlang 6.0.3
# swiftlang pulls in gcc and binutils (the linker); the Glibc module needs the C headers of libc6-dev.
PACKAGES=(swiftlang libc6-dev)
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

die() { echo "install-swift-toolchain: error: $*" >&2; exit 1; }
log() { echo "install-swift-toolchain: $*" >&2; }

header() { echo "SLMPACK_SWIFT_TOOLCHAIN_LAYOUT=$LAYOUT"; }
# /usr/bin/swift in the chroot is an absolute symlink (to /usr/libexec/swift/bin/swift): resolve it inside the chroot.
swift_present() { local t; t="$(readlink "$1/usr/bin/swift" 2>/dev/null)" && [ -x "$1$t" ]; }

# ---- fast path ----------------------------------------------------------------------------------------------------
if [ -f "$ENV_FILE" ] && [ "$(grep -v '^#' "$ENV_FILE" | head -n 1)" = "$(header)" ] \
  && grep -qxF "SWIFT_ROOT=$SWIFT_ROOT" "$ENV_FILE" && swift_present "$SWIFT_ROOT"; then
  grep -v '^#' "$ENV_FILE"
  exit 0
fi

START=$SECONDS
[ "$(id -u)" = 0 ] || die "must run as root (debootstrap and chroot need it)"
for tool in apt-get dpkg-deb wget perl chroot unshare mount umount; do
  command -v "$tool" >/dev/null 2>&1 || die "'$tool' is required but not on PATH"
done
[ -f "$KEYRING" ] || die "$KEYRING is missing (package debian-archive-keyring)"
command -v gpgv >/dev/null 2>&1 || command -v sqv >/dev/null 2>&1 \
  || die "'gpgv' (or 'sqv') is required to verify the $SUITE Release file but neither is on PATH"
mkdir -p "$TC"
rm -f "$ENV_FILE"

# Mounts below a directory (deepest first); a killed debootstrap can leave /proc or /sys mounted in its target.
unmount_under() {  # <dir>
  local dir="$1" mnt
  awk -v d="$dir" '$2 == d || index($2, d "/") == 1 { print $2 }' /proc/self/mounts | sort -r \
    | while IFS= read -r mnt; do umount -l "$mnt" || die "cannot unmount $mnt"; done
}

remove_tree() {  # <dir>: rm -rf that never crosses into a mount
  [ -e "$1" ] || return 0
  unmount_under "$1"
  rm -rf --one-file-system "$1"
}

# Runs `sh -c <command>` as root in the chroot <dir> with a clean environment, a private mount namespace and a fresh
# /proc of its own pid namespace: when the command ends (or is killed) the kernel drops the mount.
in_root() {  # <dir> <command>
  unshare --mount --propagation private --pid --fork --kill-child --mount-proc="$1/proc" \
    chroot "$1" /usr/bin/env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 LC_ALL=C.UTF-8 TERM=dumb /bin/sh -c "$2"
}

debian_mirror() {
  [ -n "${SLMPACK_DEBIAN_MIRROR:-}" ] && { echo "$SLMPACK_DEBIAN_MIRROR"; return; }
  local f uri codenames='(bullseye|bookworm|trixie|forky|sid)'  # a plain Debian suite, not -security/-updates
  for f in /etc/apt/sources.list.d/*.sources; do  # deb822: the URIs of a stanza whose suites include one of them
    [ -f "$f" ] || continue
    uri="$(awk -v c="$codenames" 'BEGIN{RS=""; FS="\n"}
             $0 ~ "(^|\n)Suites:[^\n]*[ \t]" c "( |\t|\n|$)" && /(^|\n)Types:[^\n]*deb( |\n|$)/ {
               for (i = 1; i <= NF; i++) if ($i ~ /^URIs:/) { split($i, a, /[ \t]+/); print a[2]; exit } }' "$f")"
    [ -n "$uri" ] && { echo "$uri"; return; }
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do  # one-line style
    [ -f "$f" ] || continue
    uri="$(awk -v c="^$codenames\$" '$1 == "deb" { l = $0; sub(/\[[^]]*\]/, "", l); split(l, a, /[ \t]+/)
             if (a[3] ~ c) { print a[2]; exit } }' "$f")"
    [ -n "$uri" ] && { echo "$uri"; return; }
  done
}

MIRROR="$(debian_mirror)"
[ -n "$MIRROR" ] || die "no Debian mirror found in /etc/apt/sources.list{,.d/*}; set SLMPACK_DEBIAN_MIRROR"

# ---- debootstrap: from PATH if it knows $SUITE, else trixie's package unpacked under $TC/debootstrap ---------------
DBS_ROOT="$TC/debootstrap"
if command -v debootstrap >/dev/null 2>&1 && [ -e "/usr/share/debootstrap/scripts/$SUITE" ]; then
  DEBOOTSTRAP=(debootstrap)
else
  if [ ! -f "$DBS_ROOT/.complete" ]; then
    APT="$TC/apt"
    rm -rf "$APT" "$DBS_ROOT"
    mkdir -p "$APT/lists/partial" "$APT/archives/partial" "$APT/debs" "$DBS_ROOT"
    printf 'deb [signed-by=%s] %s %s main\n' "$KEYRING" "$MIRROR" "$SUITE" > "$APT/sources.list"
    APT_OPTS=(-o "Dir::Etc::sourcelist=$APT/sources.list" -o "Dir::Etc::sourceparts=-"
      -o "Dir::State::Lists=$APT/lists" -o "Dir::Cache::archives=$APT/archives"
      -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache=" -o "Dir::State::status=/dev/null"
      -o "Acquire::Check-Valid-Until=false" -o "APT::Get::List-Cleanup=false"
      -o "APT::Sandbox::User=root")  # downloads into a dir _apt cannot write
    log "fetching the Debian package index ($SUITE) from $MIRROR"
    apt-get "${APT_OPTS[@]}" -qq update >&2 || die "apt-get update against $MIRROR failed"
    (cd "$APT/debs" && apt-get "${APT_OPTS[@]}" -qq download "debootstrap/$SUITE" >&2) \
      || die "apt-get download debootstrap/$SUITE failed"
    for deb in "$APT/debs"/*.deb; do dpkg-deb -x "$deb" "$DBS_ROOT" || die "dpkg-deb -x $deb failed"; done
    rm -rf "$APT"
    [ -e "$DBS_ROOT/usr/share/debootstrap/scripts/$SUITE" ] || die "the debootstrap package does not know $SUITE"
    touch "$DBS_ROOT/.complete"
  fi
  # The script sources $DEBOOTSTRAP_DIR/functions and reads $DEBOOTSTRAP_DIR/scripts/<suite>.
  DEBOOTSTRAP=(env "DEBOOTSTRAP_DIR=$DBS_ROOT/usr/share/debootstrap" sh "$DBS_ROOT/usr/sbin/debootstrap")
fi

# ---- the chroot ---------------------------------------------------------------------------------------------------
remove_tree "$BUILD_ROOT"
log "debootstrap --variant=minbase $SUITE with ${PACKAGES[*]} from $MIRROR (downloads about 570 MB)"
# In a private mount namespace, so that the /proc and /sys debootstrap mounts into the target vanish with it.
unshare --mount --propagation private -- "${DEBOOTSTRAP[@]}" --variant=minbase --keyring="$KEYRING" \
  --include="$(IFS=,; echo "${PACKAGES[*]}")" "$SUITE" "$BUILD_ROOT" "$MIRROR" > "$TC/debootstrap.log" 2>&1 \
  || die "debootstrap failed; the last lines of $TC/debootstrap.log:
$(tail -n 15 "$TC/debootstrap.log")"
unmount_under "$BUILD_ROOT"
in_root "$BUILD_ROOT" 'apt-get clean && rm -rf /var/lib/apt/lists/* && mkdir -p /work' \
  || die "cleaning the apt cache in the chroot failed"
swift_present "$BUILD_ROOT" || die "debootstrap left no /usr/bin/swift in $BUILD_ROOT"
for dev in null zero full random urandom tty; do
  [ -c "$BUILD_ROOT/dev/$dev" ] || die "the chroot has no /dev/$dev (debootstrap could not create device nodes)"
done

# ---- checks -------------------------------------------------------------------------------------------------------
VERSION_OUT="$(in_root "$BUILD_ROOT" 'swift --version' 2>&1)" || die "swift --version fails in the chroot:
$VERSION_OUT"
SWIFT_VERSION="$(printf '%s\n' "$VERSION_OUT" | sed -n 's/.*Swift version \([^ ]*\).*/\1/p' | head -n 1)"
[ -n "$SWIFT_VERSION" ] || die "cannot read the version from swift --version: $VERSION_OUT"
log "Swift $SWIFT_VERSION; building and testing a throwaway package"

SMOKE="$BUILD_ROOT/work/smoke"
mkdir -p "$SMOKE/Sources/Smoke" "$SMOKE/Tests/SmokeTests"
cat > "$SMOKE/Package.swift" <<'EOF'
// swift-tools-version:5.9
import PackageDescription

let package = Package(
    name: "Smoke",
    targets: [
        .target(name: "Smoke"),
        .testTarget(name: "SmokeTests", dependencies: ["Smoke"]),
    ]
)
EOF
cat > "$SMOKE/Sources/Smoke/Smoke.swift" <<'EOF'
import Foundation

public func greeting(_ name: String) -> String {
    "Hello, \(name)!"
}
EOF
cat > "$SMOKE/Tests/SmokeTests/SmokeTests.swift" <<'EOF'
import Testing
import XCTest

@testable import Smoke

final class SmokeTests: XCTestCase {
    func testGreeting() {
        XCTAssertEqual(greeting("Swift"), "Hello, Swift!")
    }
}

@Test func greets() {
    #expect(greeting("Linux") == "Hello, Linux!")
}
EOF
# swift-format defaults to 2-space indentation; the package's .swift-format (found next to the sources) says 4.
echo '{ "version": 1, "indentation": { "spaces": 4 }, "lineLength": 120 }' > "$SMOKE/.swift-format"
check() {  # <what> <command in /work/smoke>
  local out
  out="$(in_root "$BUILD_ROOT" "cd /work/smoke && $2" 2>&1)" || die "$1 fails in the chroot:
$(printf '%s\n' "$out" | tail -n 30)"
  printf '%s\n' "$out"
}
t=$SECONDS; check "swift build" "swift build" >/dev/null; log "swift build: $((SECONDS - t)) s"
t=$SECONDS; out="$(check "swift test" "swift test")"; log "swift test: $((SECONDS - t)) s"
printf '%s\n' "$out" | grep -q "Executed 1 test, with 0 failures" || die "swift test did not run the XCTest case:
$out"
printf '%s\n' "$out" | grep -q "Test run with 1 test passed" || die "swift test did not run the swift-testing case:
$out"
check "swift format lint" "swift format lint --strict --recursive Package.swift Sources Tests" >/dev/null
FORMAT_VERSION="$(in_root "$BUILD_ROOT" 'swift format --version' 2>&1)" || die "swift format --version fails"
log "swift-format $FORMAT_VERSION"
remove_tree "$SMOKE"
rm -rf "$BUILD_ROOT/root/.cache" "$BUILD_ROOT/root/.swiftpm" "$BUILD_ROOT/root/.local"  # what the checks left behind
find "$BUILD_ROOT/tmp" -mindepth 1 -delete

# ---- into place, then toolchain.env -------------------------------------------------------------------------------
remove_tree "$SWIFT_ROOT"
mv "$BUILD_ROOT" "$SWIFT_ROOT"
{
  echo "# written by scripts/install-swift-toolchain.sh; read by tests/ios/toolchain.py"
  header
  echo "SWIFT_VERSION=$SWIFT_VERSION"
  echo "SWIFT_ROOT=$SWIFT_ROOT"
} > "$ENV_FILE.tmp"
mv "$ENV_FILE.tmp" "$ENV_FILE"
log "done in $((SECONDS - START)) s; $SWIFT_ROOT uses $(du -sh --one-file-system "$SWIFT_ROOT" | cut -f1)"
grep -v '^#' "$ENV_FILE"
