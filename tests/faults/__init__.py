"""The fault suite: syncs killed at random points, interrupted, out of space, their RGW restarted."""
