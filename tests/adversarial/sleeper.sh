#!/bin/sh
# Idle, far past any case timeout.
echo "sleeping for an hour"
exec sleep 3600
