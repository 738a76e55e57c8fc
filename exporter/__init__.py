"""Prometheus exporter for SignalWire call, message, recording and transcription callbacks."""

__version__ = "0.1.0"
