#!/bin/busybox sh
# /init of the test initramfs: load the device-mapper modules, name the
# virtio disks after their qemu serial (/dev/disk/<serial>), run /scenario.sh
# with its output between markers on the serial console, then power off.
/bin/busybox mkdir -p /proc /sys /dev /tmp /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
# Keep kernel messages off the console so they cannot interleave with results.
echo 1 >/proc/sys/kernel/printk

while read -r mod; do
  insmod "/modules/$mod" || echo "@@DMT-MODULE-FAILED $mod@@"
done </modules/order

# virtio disks: wait for them, then link them by serial.
want=$(cat /disk-count)
i=0
while [ "$(ls /sys/block | grep -c '^vd')" -lt "$want" ] && [ $i -lt 100 ]; do
  sleep 0.1
  i=$((i + 1))
done
mkdir -p /dev/disk
for b in /sys/block/vd*; do
  [ -e "$b" ] || continue
  serial=$(cat "$b/serial" 2>/dev/null)
  [ -n "$serial" ] && ln -s "/dev/${b##*/}" "/dev/disk/$serial"
done

# libdevmapper creates /dev/mapper nodes itself when udev is not in charge.
export DM_DISABLE_UDEV=1
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

echo "@@DMT-BEGIN@@"
sh -e /scenario.sh
rc=$?
echo "@@DMT-END rc=$rc@@"
sync
poweroff -f
