#!/bin/sh
# One file far larger than /output's cap.
exec dd if=/dev/zero of=/output/big.bin bs=1M count=2048
