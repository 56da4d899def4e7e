"""The deploy client: asks a keep manager for a Keep, verifies it, then sends the workload."""

from __future__ import annotations
