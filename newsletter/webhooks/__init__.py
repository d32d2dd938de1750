"""Inbound provider events: signature checks and parsing into `TrackingEvent`s, one module per provider."""
