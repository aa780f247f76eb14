#!/usr/bin/env bash
# A filesystem on a served snapshot: make an ext4 origin image, take a
# snapshot of it, serve the origin (snapshot-origin) and the snapshot over
# NBD, attach both through nbdfuse and loop devices, change files on the
# origin and see the old ones in the snapshot, then merge the snapshot
# back: merging rolls the origin back to what the snapshot shows.
#
# Usage: served-snapshot-fs.sh WORKDIR
# Needs root (losetup, mount), nbdfuse, e2fsprogs and /dev/fuse. DMTOOL
# names the command to run (default: dmtool). Everything it mounts,
# attaches or starts is undone on exit, also on failure.
set -euo pipefail

work=$(realpath "$1")
read -r -a dmtool <<<"${DMTOOL:-dmtool}"
socket="$work/nbd.sock"
sectors=$((32 * 2048)) # 32 MiB

mounts=()
loops=()
fuses=()
serve_pid=
cleanup() {
  local m l
  for m in ${mounts[@]+"${mounts[@]}"}; do umount "$m" 2>/dev/null || true; done
  for l in ${loops[@]+"${loops[@]}"}; do losetup -d "$l" 2>/dev/null || true; done
  for m in ${fuses[@]+"${fuses[@]}"}; do umount "$m" 2>/dev/null || true; done
  if [ -n "$serve_pid" ]; then
    kill -TERM "$serve_pid" 2>/dev/null || true
    wait "$serve_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT

# Undone already: drop from the cleanup list (a loop device number may be reused by others).
unmount() {
  umount "$1"
  mounts=(${mounts[@]/"$1"/})
}
unloop() {
  losetup -d "$1"
  loops=(${loops[@]/"$1"/})
}

# Wait (at most 10 s) until a command succeeds.
wait_for() {
  local i
  for i in $(seq 100); do
    if "$@"; then return 0; fi
    sleep 0.1
  done
  echo "timed out waiting for: $*" >&2
  return 1
}

# attach NAME [-r]: the export NAME as a file through nbdfuse, then a loop
# device on that file, left in $attached (no subshell: the lists above must keep it).
attach() {
  local name=$1 ro=${2:-}
  mkdir -p "$work/fuse-$name"
  nbdfuse ${ro:+-r} -P "$work/fuse-$name.pid" "$work/fuse-$name/disk" "nbd+unix:///$name?socket=$socket" >/dev/null 2>>"$work/nbdfuse.log" &
  fuses+=("$work/fuse-$name")
  wait_for test -s "$work/fuse-$name.pid"
  attached=$(losetup -f --show ${ro:+-r} "$work/fuse-$name/disk")
  loops+=("$attached")
}

# detach LOOP NAME: the loop device, then the FUSE mount (nbdfuse exits).
detach() {
  unloop "$1"
  umount "$work/fuse-$2"
  fuses=(${fuses[@]/"$work\/fuse-$2"/})
}

files_of() {
  (cd "$1" && echo $(ls))
}

mkdir -p "$work/files" "$work/mnt"
printf 'version 1\n' >"$work/files/notes.txt"
mkfs.ext4 -q -F -d "$work/files" "$work/origin.img" 32M >/dev/null
truncate -s 16M "$work/cow.img"
"${dmtool[@]}" snapshot-create "$work/origin.img" "$work/cow.img" --chunk-size 8 >/dev/null
echo "origin.img: ext4 holding notes.txt (version 1); snapshot taken into cow.img"

"${dmtool[@]}" serve --socket "$socket" \
  --dev origin "0 $sectors snapshot-origin $work/origin.img" \
  --dev snap "0 $sectors snapshot $work/origin.img $work/cow.img P 8" \
  --read-only snap >"$work/serve.out" 2>"$work/serve.err" </dev/null &
serve_pid=$!
wait_for grep -q '^listening on' "$work/serve.out"
echo "serving origin (snapshot-origin) and snap (snapshot, read-only) over NBD"

attach origin
origin_loop=$attached
mount "$origin_loop" "$work/mnt"
mounts+=("$work/mnt")
printf 'version 2\n' >"$work/mnt/notes.txt"
printf 'written after the snapshot\n' >"$work/mnt/added.txt"
echo "origin, through nbdfuse and a loop device: notes.txt $(cat "$work/mnt/notes.txt"); files: $(files_of "$work/mnt")"
unmount "$work/mnt"

attach snap -r
snap_loop=$attached
mount -o ro,noload "$snap_loop" "$work/mnt"
mounts+=("$work/mnt")
echo "snapshot, through nbdfuse and a read-only loop device: notes.txt $(cat "$work/mnt/notes.txt"); files: $(files_of "$work/mnt")"
unmount "$work/mnt"

e2fsck -fn "$origin_loop" >/dev/null 2>&1 && origin_fsck=clean || origin_fsck="NOT clean"
e2fsck -fn "$snap_loop" >/dev/null 2>&1 && snap_fsck=clean || snap_fsck="NOT clean"
echo "e2fsck -fn: origin $origin_fsck, snapshot $snap_fsck"
detach "$snap_loop" snap
detach "$origin_loop" origin

kill -TERM "$serve_pid"
wait "$serve_pid"
serve_pid=
tail -n 1 "$work/serve.out"

"${dmtool[@]}" snapshot-merge "$work/origin.img" "$work/cow.img" >/dev/null
echo "snapshot-merge: the origin now holds what the snapshot showed"
e2fsck -fn "$work/origin.img" >/dev/null 2>&1 && merged_fsck=clean || merged_fsck="NOT clean"
merged_loop=$(losetup -f --show -r "$work/origin.img")
loops+=("$merged_loop")
mount -o ro,noload "$merged_loop" "$work/mnt"
mounts+=("$work/mnt")
echo "origin.img after the merge: notes.txt $(cat "$work/mnt/notes.txt"); files: $(files_of "$work/mnt"); e2fsck $merged_fsck"
unmount "$work/mnt"
unloop "$merged_loop"
