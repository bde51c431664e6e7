#!/bin/sh
# Links in /output to host files and directories, and a FIFO where the output should be.
set -e
mkdir -p /output/images/oar-segmentation
ln -s /etc/shadow /output/images/oar-segmentation/output.mha
ln -s /etc/passwd /output/passwd.mha
ln -s /etc /output/etc-dir
ln -s / /output/host-root
ln -s ../../../../../../etc/shadow /output/relative-shadow.mha
ln -s /etc /output/images/oar-segmentation-link
mkdir -p /output/nested/images
ln -s /etc/shadow /output/nested/images/shadow.mha
mkfifo /output/images/fifo.mha
echo "links planted"
