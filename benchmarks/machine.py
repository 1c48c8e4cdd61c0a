"""What the numbers were measured on."""

from __future__ import annotations

import os
import platform
import sqlite3
import sys


def describe() -> dict[str, str]:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": f"{cpu} ({os.cpu_count()} cores)",
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
        "os": platform.platform(),
    }
