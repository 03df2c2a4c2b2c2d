#!/usr/bin/env bash
# Builds target/java-workload.jar (one runnable jar with every dependency) and prints its path on
# the last line of stdout. Maven runs offline first (everything already in ~/.m2), and online only
# if that fails; a jar newer than pom.xml and every source is reused without running Maven.
# Maven's own output goes to stderr. Concurrent runs wait for each other (flock).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
jar="$here/target/java-workload.jar"

fresh() {
  [[ -f "$jar" ]] && [[ -z "$(find pom.xml src -newer "$jar" -print -quit)" ]]
}

for tool in mvn java; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "build.sh: $tool is not installed (java-workload needs Java 17+ and Maven)" >&2
    exit 1
  fi
done

mkdir -p target
exec 9>"target/.build.lock"
if command -v flock >/dev/null 2>&1; then
  flock 9
fi

if ! fresh; then
  log="target/.build-offline.log"
  if mvn -q -B -o -DskipTests package >"$log" 2>&1; then
    echo "build.sh: built offline" >&2
  else
    echo "build.sh: offline build failed (see $log), building online" >&2
    mvn -q -B -DskipTests package >&2
  fi
  if [[ ! -f "$jar" ]]; then
    echo "build.sh: Maven succeeded but $jar is missing" >&2
    exit 1
  fi
  # package rewrites the jar even when nothing changed: make it newer than the sources.
  touch "$jar"
fi

echo "$jar"
